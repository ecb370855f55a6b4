"""Stability regions {z = h lambda : |R(z)| <= 1} drawn in the complex plane (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from odenets.analysis.stability import fixed_step, stability_function, stable
from odenets.integrators import Integrator

EXTENT = (-5.0, 3.0, -4.0, 4.0)  # (re_min, re_max, im_min, im_max): RK4's region fits, with room


def region_grid(integrator: Integrator | str, extent=EXTENT, resolution: int = 300):
    """(re, im, |R(re + i im)|) on a resolution x resolution grid over `extent`."""
    re = np.linspace(extent[0], extent[1], resolution)
    im = np.linspace(extent[2], extent[3], resolution)
    zr, zi = np.meshgrid(re, im)
    return zr, zi, np.abs(stability_function(integrator)(zr + 1j * zi))


def plot_regions(
    integrators: Sequence[Integrator | str] | Integrator | str,
    ax=None,
    *,
    extent=EXTENT,
    resolution: int = 300,
    eigenvalues=None,
    alpha: float = 0.15,
):
    """Draw each integrator's stability region |R(z)| <= 1 (filled, with its boundary |R| = 1) in
    the plane of z = h lambda, axes Re(h lambda) and Im(h lambda), one legend entry per method.
    A region without interior (reversible Heun's segment [-i, i] of the imaginary axis) is drawn
    as a thick line on the axis.

    eigenvalues: optional points z = h lambda to scatter on top: an array (any shape), or a
    mapping label -> array for several sets (each its own marker colour and legend entry).
    Returns the axes (a new figure's when ax is None).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if isinstance(integrators, (str, Integrator)):
        integrators = [integrators]
    integs = [fixed_step(i) for i in integrators]  # refuse adaptive ones before drawing
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    handles = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, integ in enumerate(integs):
        colour = colours[n % len(colours)]
        zr, zi, mod = region_grid(integ, extent, resolution)
        ax.contourf(zr, zi, mod, levels=[0.0, 1.0], colors=[colour], alpha=alpha)
        if np.nanmin(mod) < 1.0 < np.nanmax(mod):
            ax.contour(zr, zi, mod, levels=[1.0], colors=[colour], linewidths=1.5)
        else:  # no interior (reversible Heun: the segment [-i, i]): draw the stable part of the imaginary axis
            y = zi[:, 0]
            on_axis = np.where(stable(integ, 1j * y), y, np.nan)
            ax.plot(np.zeros_like(y), on_axis, color=colour, linewidth=4, solid_capstyle="butt")
        handles.append(Patch(facecolor=colour, edgecolor=colour, alpha=0.5, label=integ.name))
    if eigenvalues is not None:
        sets = eigenvalues.items() if isinstance(eigenvalues, Mapping) else [("eigenvalues", eigenvalues)]
        for n, (label, z) in enumerate(sets):
            z = np.asarray(z).reshape(-1)
            handles.append(ax.scatter(np.real(z), np.imag(z), s=6, color=colours[(len(integs) + n) % len(colours)],
                                      marker="o", label=label, zorder=3))
    ax.axhline(0.0, color="0.6", linewidth=0.6)
    ax.axvline(0.0, color="0.6", linewidth=0.6)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel(r"Re$(h\lambda)$")
    ax.set_ylabel(r"Im$(h\lambda)$")
    ax.legend(handles=handles, loc="upper left", fontsize="small")
    return ax
