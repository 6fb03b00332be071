"""Experiment 2: tune the training optimizer (the build function compiles with it)."""

import keras
import recipe


def create_model(optimizer="adam"):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="relu", kernel_initializer="uniform"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


param_grid = dict(model__optimizer=["SGD", "RMSprop", "Adagrad", "Adadelta", "Adam",
                                    "Adamax", "Nadam"])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
