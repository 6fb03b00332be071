"""Experiment 7: tune the number of neurons in the hidden layer."""

import keras
import recipe


def create_model(neurons=1):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(neurons, activation="linear", kernel_initializer="uniform",
                           kernel_constraint=keras.constraints.MaxNorm(4)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


param_grid = dict(model__neurons=[1, 5, 10, 15, 20, 25, 30])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
