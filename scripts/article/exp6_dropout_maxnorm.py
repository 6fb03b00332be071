"""Experiment 6: tune dropout and the max-norm weight constraint."""

import keras
import recipe


def create_model(dropout_rate=0.0, weight_constraint=1.0):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="linear", kernel_initializer="uniform",
                           kernel_constraint=keras.constraints.MaxNorm(weight_constraint)),
        keras.layers.Dropout(dropout_rate),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


param_grid = dict(model__dropout_rate=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                  model__weight_constraint=[1, 2, 3, 4, 5])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
