"""BiU-Net and SCDA networks: the torch modules.

:class:`BiUNet` follows the BiU-Net paper (Methods 5.3 "Model") and the model code the authors
made public (``model/unet.py`` in ``learnslowly/BiU-Net``); :class:`SCDA` is the sparse
convolutional denoising autoencoder of Chen and Shi 2019 (``SCDA_train.ipynb`` in
``work-hard-play-harder/SCDA``). Both read the one-hot token code with, as configured, the
positional channel, the site prior and a learned site embedding, and emit the logits of the four
phased genotypes; the architectures and our additions are described in
:mod:`analysislib.genotype.unet` ("Models", "Site prior"). This module imports torch; build a
network from a configuration with :func:`~analysislib.genotype.unet_training.build_model`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from analysislib.errors import InvalidArgumentError
from analysislib.genotype.segments import N_CLASSES, VOCAB_SIZE

__all__ = ["SCDA", "BiUNet"]


def _one_hot_input(tokens: torch.Tensor, positional: torch.Tensor | None, *, use_pos: bool,
                   prior: torch.Tensor | None, use_prior: bool,
                   embedding: torch.Tensor | None, segment: torch.Tensor | None) -> torch.Tensor:
    x = nn.functional.one_hot(tokens.long(), VOCAB_SIZE).to(torch.float32).transpose(1, 2)
    if use_pos:
        if positional is None:
            raise InvalidArgumentError("this model needs the positional channel")
        x = torch.cat([x, positional.to(torch.float32).unsqueeze(1)], dim=1)
    if use_prior:
        if prior is None:
            raise InvalidArgumentError("this model needs the site prior")
        x = torch.cat([x, prior.to(torch.float32).exp()], dim=1)
    if embedding is not None:
        if segment is None:
            raise InvalidArgumentError("this model has a site embedding: pass the segment index of each row")
        x = torch.cat([x, embedding[segment.long()]], dim=1)
    return x


def _site_embedding(sites: tuple[int, int] | None, site_channels: int) -> nn.Parameter | None:
    """Learned (n_segments, site_channels, length) input channels, zero at the start."""
    if not site_channels:
        return None
    if sites is None:
        raise InvalidArgumentError("a site embedding needs the segmentation: pass sites=(n_segments, length)")
    return nn.Parameter(torch.zeros(sites[0], site_channels, sites[1]))


def _with_prior(logits: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    return logits if prior is None else logits + prior.to(logits.dtype)


def _conv_encoder(depth: int, channels: int, kernel_size: int, *, positional: bool,
                  site_prior: bool, site_channels: int) -> nn.ModuleList:
    """Convolutions doubling the channels per level, from the one-hot (+ site channels) input."""
    first = VOCAB_SIZE + int(positional) + N_CLASSES * int(site_prior) + site_channels
    widths = [first] + [channels * 2**i for i in range(depth)]
    return nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=(kernel_size - 1) // 2)
                         for a, b in itertools.pairwise(widths))


class BiUNet(nn.Module):
    """BiU-Net: 1D U-Net with additive skips and a positional channel.

    Described in :mod:`analysislib.genotype.unet` ("Models").

    Parameters
    ----------
    depth, channels, kernel_size, dropout
        Encoder levels, channels of the first level (doubling per level), convolution
        width and dropout rate.
    positional
        Take the positional channel as an extra input channel.

    ``forward(tokens, positional)`` maps (batch, length) codes and (batch, length)
    positions to (batch, 4, length) logits of 0|0, 0|1, 1|0, 1|1.
    """

    def __init__(self, depth: int = 6, channels: int = 32, kernel_size: int = 7, *,
                 dropout: float = 0.25, positional: bool = True, site_prior: bool = False,
                 site_channels: int = 0, sites: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.depth, self.use_positional, self.use_site_prior = depth, positional, site_prior
        pad = (kernel_size - 1) // 2
        self.encoder = _conv_encoder(depth, channels, kernel_size, positional=positional,
                                     site_prior=site_prior, site_channels=site_channels)
        self.site_embedding = _site_embedding(sites, site_channels)
        self.decoder = nn.ModuleList(
            nn.Conv1d(channels * 2**i, channels * 2 ** (i - 1), kernel_size, padding=pad)
            for i in range(depth - 1, 0, -1))
        self.head = nn.Conv1d(channels, N_CLASSES, kernel_size, padding=pad)
        self.pool, self.drop = nn.MaxPool1d(2), nn.Dropout(dropout)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, tokens: torch.Tensor, positional: torch.Tensor | None = None,
                prior: torch.Tensor | None = None, segment: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, length) codes -> (batch, 4, length) logits (see the class docstring)."""
        x = _one_hot_input(tokens, positional, use_pos=self.use_positional, prior=prior,
                           use_prior=self.use_site_prior, embedding=self.site_embedding,
                           segment=segment)
        skips = []
        for i, conv in enumerate(self.encoder):
            x = torch.relu(conv(x))
            if i < self.depth - 1:
                skips.append(x)
                x = self.drop(self.pool(x))
        for conv, skip in zip(self.decoder, reversed(skips), strict=True):
            x = self.drop(torch.relu(conv(self.up(x))) + skip)
        return _with_prior(self.head(x), prior if self.use_site_prior else None)


class SCDA(nn.Module):
    """SCDA (Chen and Shi 2019): convolutional denoising autoencoder without skips.

    Same parameters and ``forward`` as :class:`BiUNet`; ``depth=3`` is the published
    network, ``positional`` is off by default.
    """

    def __init__(self, depth: int = 3, channels: int = 32, kernel_size: int = 5, *,
                 dropout: float = 0.25, positional: bool = False, site_prior: bool = False,
                 site_channels: int = 0, sites: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.depth, self.use_positional, self.use_site_prior = depth, positional, site_prior
        pad = (kernel_size - 1) // 2
        self.encoder = _conv_encoder(depth, channels, kernel_size, positional=positional,
                                     site_prior=site_prior, site_channels=site_channels)
        self.site_embedding = _site_embedding(sites, site_channels)
        c_in = channels * 2 ** (depth - 1)
        self.decoder = nn.ModuleList()
        for i in range(depth - 2, -1, -1):
            self.decoder.append(nn.Conv1d(c_in, channels * 2**i, kernel_size, padding=pad))
            c_in = channels * 2**i
        self.head = nn.Conv1d(c_in, N_CLASSES, kernel_size, padding=pad)
        self.pool, self.drop = nn.MaxPool1d(2), nn.Dropout(dropout)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, tokens: torch.Tensor, positional: torch.Tensor | None = None,
                prior: torch.Tensor | None = None, segment: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, length) codes -> (batch, 4, length) logits, as :meth:`BiUNet.forward`."""
        x = _one_hot_input(tokens, positional, use_pos=self.use_positional, prior=prior,
                           use_prior=self.use_site_prior, embedding=self.site_embedding,
                           segment=segment)
        for i, conv in enumerate(self.encoder):
            x = torch.relu(conv(x))
            if i < self.depth - 1:
                x = self.drop(self.pool(x))
        for conv in self.decoder:
            x = self.drop(self.up(torch.relu(conv(x))))
        # logits; softmax is applied by the loss and at prediction
        return _with_prior(self.head(x), prior if self.use_site_prior else None)
