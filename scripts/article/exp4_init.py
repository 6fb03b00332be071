"""Experiment 4: tune the network weight initialization."""

import keras
import recipe


def create_model(init_mode="uniform"):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="relu", kernel_initializer=init_mode),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init_mode),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


param_grid = dict(model__init_mode=["uniform", "lecun_uniform", "normal", "zero",
                                    "glorot_normal", "glorot_uniform", "he_normal",
                                    "he_uniform"])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
