"""Experiment 1: tune batch size and number of epochs (the article's first grid)."""

import keras
import recipe


def create_model():
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="relu", kernel_initializer="uniform"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


param_grid = dict(batch_size=[10, 20, 40, 60, 80, 100], epochs=[10, 50, 100])

if __name__ == "__main__":
    recipe.main(create_model, param_grid, epochs=10)
