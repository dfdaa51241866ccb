"""agecheck training: labelled face photos -> Keras ResNet50 age regressor -> int8 TFLite."""
