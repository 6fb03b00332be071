"""Experiment 5: tune the hidden layer's activation function."""

import keras
import recipe


def create_model(activation="relu"):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation=activation, kernel_initializer="uniform"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


param_grid = dict(model__activation=["softmax", "softplus", "softsign", "relu", "tanh",
                                     "sigmoid", "hard_sigmoid", "linear"])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
