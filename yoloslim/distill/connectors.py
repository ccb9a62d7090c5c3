"""Channel alignment between student and teacher features.

A pruned or narrower student has fewer channels than its teacher at the same layer. A 1x1
conv + BN maps the student feature to the teacher's width; it is trained with the student
and thrown away afterwards, so the saved student is exactly the student. Equal widths need no
mapping (identity), which keeps "student equals teacher" a zero-loss point.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn


def make_connector(student_channels: int, teacher_channels: int) -> nn.Module:
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(teacher_channels),
    )


def build_connectors(student_channels: Sequence[int], teacher_channels: Sequence[int]) -> nn.ModuleList:
    """One connector per matched layer pair."""
    return nn.ModuleList(make_connector(s, t) for s, t in zip(student_channels, teacher_channels))
