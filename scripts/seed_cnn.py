"""The seed CNN in PyTorch, shared by every nnopt helper script.

Parameter names (conv1.weight, ..., fc2.bias) are the names nnopt's model file
gives its layers and the names nnopt checkpoints store, so a state_dict and an
nnopt safetensors checkpoint map one to one. The same network as an nnopt
model file:

    input shape=1x28x28
    conv2d name=conv1 out=16 kernel=3 pad=1
    relu
    maxpool size=2
    conv2d name=conv2 out=32 kernel=3 pad=1
    relu
    maxpool size=2
    flatten
    linear name=fc1 out=128
    relu
    linear name=fc2 out=10
    softmax_ce
"""

from pydeps import require  # says how to install a missing module

require("torch")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Fashion-MNIST training-set statistics (NN_FASHION_MNIST_MEAN / _STD in nnopt.h).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


class SeedCNN(nn.Module):
    """conv-relu-pool x2, then two linear layers; returns logits (N, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)   # (N,1,28,28) -> (N,16,28,28)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)  # (N,16,14,14) -> (N,32,14,14)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)         # (N,1568) -> (N,128)
        self.fc2 = nn.Linear(128, 10)                 # (N,128) -> (N,10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)    # (N,16,14,14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)    # (N,32,7,7)
        x = torch.flatten(x, 1)                       # (N,1568)
        x = F.relu(self.fc1(x))                       # (N,128)
        return self.fc2(x)                            # (N,10) logits; loss = CrossEntropyLoss
