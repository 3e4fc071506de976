"""A tiny EfficientNet-Lite-like PyTorch net, as the source of a module factory file.

Tests write SOURCE to a .py file and load it the way users do (`--torch-model FILE.py:build`):
conv-BN-ReLU6, depthwise conv, 1x1 conv, residual add, global mean, linear (5 classes).
`build()` gives default initialisation; `build_with_bn_stats()` seeds torch and gives the
BatchNorm non-trivial running statistics, so folding BN into the conv is exercised.
"""

import textwrap

SOURCE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F

    class Tiny(torch.nn.Module):
        """conv-BN-ReLU6, depthwise conv, 1x1 conv, residual add, global mean, linear."""

        def __init__(self, classes=5):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
            self.b1 = torch.nn.BatchNorm2d(8)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = torch.nn.Conv2d(8, 8, 1)
            self.fc = torch.nn.Linear(8, classes)

        def forward(self, x):
            x = F.relu6(self.b1(self.c1(x)))
            x = x + self.pw(F.relu6(self.dw(x)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def build():
        return Tiny()

    def build_with_bn_stats():
        torch.manual_seed(0)
        m = Tiny()
        with torch.no_grad():
            m.b1.running_mean.uniform_(-0.5, 0.5)
            m.b1.running_var.uniform_(0.5, 2.0)
        return m

    def not_a_module():
        return 42
''')
