"""Experiment 3: tune SGD's learning rate and momentum."""

import keras
import recipe


def create_model(learn_rate=0.01, momentum=0.0):
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="relu", kernel_initializer="uniform"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer="uniform"),
    ])
    optimizer = keras.optimizers.SGD(learning_rate=learn_rate, momentum=momentum)
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


param_grid = dict(model__learn_rate=[0.001, 0.01, 0.1, 0.2, 0.3],
                  model__momentum=[0.0, 0.2, 0.4, 0.6, 0.8, 0.9])

if __name__ == "__main__":
    recipe.main(create_model, param_grid)
