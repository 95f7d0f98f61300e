"""tinyad build side: data set in, verified int8 TFLite device bundle out.

May import TensorFlow (through tf_keras) and XGBoost. Heavy imports happen inside
the functions that need them, so that ``tinyad --help`` stays fast.
"""
