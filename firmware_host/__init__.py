"""tinyad run side: load a device bundle, score samples with the int8 model.

Imports numpy, a TFLite interpreter, click and pyserial only -- never TensorFlow --
so that it installs and runs on a Raspberry Pi-class device.
"""

__version__ = "0.1.0"
