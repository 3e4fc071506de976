"""The network of Resemblyzer's speaker encoder (resemblyzer 0.1.4, Apache-2.0), for
`--torch-model tests/data/torch_factories/resemblyzer_encoder.py:voice_encoder` with the
wheel's own weights (resemblyzer/pretrained.pt, a checkpoint whose `model_state` holds them).

As resemblyzer/voice_encoder.py defines it: a 3-layer LSTM over 40-band mel frames (batch
first), the last layer's final hidden state through Linear(256, 256) and ReLU, L2 normalised:
[B, T, 40] -> [B, 256]. The checkpoint also holds GE2E's training-time similarity scale and
bias (`similarity_weight`, `similarity_bias`); they are kept as parameters so the weights load
strictly, and the forward does not use them (resemblyzer's does not either).
"""

import torch
from torch import nn


class VoiceEncoder(nn.Module):
    def __init__(self, mel_channels=40, hidden=256, layers=3, embedding=256):
        super().__init__()
        self.lstm = nn.LSTM(mel_channels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, embedding)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels):
        _, (hidden, _) = self.lstm(mels)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)


def voice_encoder():
    return VoiceEncoder()
