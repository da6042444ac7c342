"""The anchor's reference: the PyTorch STN tutorial's own training loop for one epoch.

:func:`tutorial_stn_epoch` is self-contained (its imports are inside it and it uses nothing of
stn_lab), because the anchor runs its source alone in a fresh interpreter so that the process
pays for its own imports only, as the tutorial's users do.
"""

from __future__ import annotations


def tutorial_stn_epoch(files: dict[str, str], as_written: bool) -> None:
    """One epoch of the PyTorch STN tutorial's own loop (its network, SGD at lr 0.01, batch 64,
    then its test pass), on Fashion-MNIST.

    ``as_written``: the tutorial's data path, torchvision's dataset with per-image ``ToTensor``
    and ``Normalize`` through 4 loader workers; ``files["root"]`` holds the dataset in
    torchvision's layout. Otherwise a stricter reference: the same loop over a DataLoader of the
    IDX tensors (``files["train_images"]`` ...), normalised once up front.

    Self-contained (imports inside, nothing from stn_lab): the anchor runs its source alone in
    a fresh interpreter, so that process pays for its own imports only, as the tutorial does.
    """
    import gzip

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset

    def read(path: str) -> torch.Tensor:
        raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
        header = 4 + 4 * raw[3]
        return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).copy())

    def dataset(split: str):
        if as_written:
            from torchvision import datasets, transforms

            normalise = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
            )
            return datasets.FashionMNIST(files["root"], train=split == "train", transform=normalise)
        images = read(files[f"{split}_images"]).view(-1, 1, 28, 28).float() / 255
        labels = read(files[f"{split}_labels"]).long()
        return TensorDataset((images - 0.1307) / 0.3081, labels)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
            self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, 10)
            self.localization = nn.Sequential(
                nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            )  # fmt: skip
            self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 6))
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

        def stn(self, x):
            theta = self.fc_loc(self.localization(x).view(-1, 10 * 3 * 3)).view(-1, 2, 3)
            return F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False))

        def forward(self, x):
            x = self.stn(x)
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = F.relu(self.fc1(x.view(-1, 320)))
            x = F.dropout(x, training=self.training)
            return F.log_softmax(self.fc2(x), dim=1)

    workers = 4 if as_written else 0
    train_loader = DataLoader(dataset("train"), batch_size=64, shuffle=True, num_workers=workers)
    test_loader = DataLoader(dataset("test"), batch_size=64, shuffle=True, num_workers=workers)
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for data, target in train_loader:
        optimizer.zero_grad()
        F.nll_loss(model(data), target).backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += int((model(data).argmax(1) == target).sum())
    print(f"tutorial STN, 1 epoch: test accuracy {correct / len(test_loader.dataset):.4f}")
