"""The recipe's build functions as written for Keras 2, imported from sweep.legacy.

Only the import line differs from the article's code (which imported from
keras.models, keras.layers, keras.constraints, keras.optimizers).
"""

from keras_sweep.spec.legacy import SGD, Dense, Dropout, Sequential, maxnorm


def create_model_sgd(learn_rate=0.01, momentum=0):
    # Experiment 3: SGD learning rate and momentum
    model = Sequential()
    model.add(Dense(12, input_dim=8, activation='relu'))
    model.add(Dense(1, activation='sigmoid'))
    optimizer = SGD(lr=learn_rate, momentum=momentum)
    model.compile(loss='binary_crossentropy', optimizer=optimizer, metrics=['accuracy'])
    return model


def create_model_dropout(dropout_rate=0.0, weight_constraint=0):
    # Experiment 6: dropout and max-norm weight constraint
    model = Sequential()
    model.add(Dense(12, input_dim=8, init='uniform', activation='linear',
                    W_constraint=maxnorm(weight_constraint)))
    model.add(Dropout(dropout_rate))
    model.add(Dense(1, init='uniform', activation='sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer='adam', metrics=['accuracy'])
    return model


def create_model_optimizer(optimizer='adam'):
    # Experiment 2: the optimizer is an argument of the build function
    model = Sequential()
    model.add(Dense(12, input_dim=8, activation='relu'))
    model.add(Dense(1, activation='sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer=optimizer, metrics=['accuracy'])
    return model
