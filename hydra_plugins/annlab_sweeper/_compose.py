"""annlab's adapter to Hydra's overrides and composition: a command line into grid points, and
each point into the job config its launcher will compose.

The one private call into Hydra is here: a point's value overrides are applied to a composed
base by the config loader's own override step (``ConfigLoaderImpl._apply_overrides_to_config``),
as Hydra applies them after composing the defaults list, instead of composing each point in
full (tens of milliseconds a point, a minute for 1,000). hydra-core is pinned in
requirements.lock; tests/unit/test_compose.py holds the result equal to Hydra's full
composition, errors included.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, open_dict

from annlab.errors import InvalidGrid


def expand(arguments: list[str], limit: int | None = None
           ) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Each job's overrides: the product of every comma-separated value list (a key given twice
    keeps its last value, so the command line replaces the sweep config's grid); and the swept
    keys with their values. More than ``limit`` points are refused, counted before any is
    made (``range(1,100000000)`` is not listed)."""
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values = override.sweep_string_iterator()
            axes[key] = [f"{key}={value}" for value in itertools.islice(
                values, None if limit is None else limit + 1)]
        else:
            raise InvalidGrid(f"{override.input_line}: a grid sweeps lists of values "
                              "(key=a,b,c or range(...)), not intervals")
    swept = {key: [o.split("=", 1)[1] for o in values] for key, values in axes.items()
             if len(values) > 1}
    if limit is not None and (size := math.prod(map(len, axes.values()))) > limit:
        shown = " x ".join(f"{len(v):,}{'+' if len(v) > limit else ''} {k}"
                           for k, v in swept.items())
        raise InvalidGrid(f"the grid has {'over ' if '+' in shown else ''}{size:,} points "
                          f"({shown}); allowed: at most {limit:,} in one sweep: split it, or "
                          "search the space with make tune")
    return [list(point) for point in itertools.product(*axes.values())], swept


def compose_jobs(loader, master: DictConfig, points: Sequence[Sequence[str]]
                 ) -> Iterator[DictConfig]:
    """Each point's job config (without the ``hydra`` node), as its launcher will compose it,
    one at a time (a grid of thousands need not hold them all).

    Hydra composes a config from the defaults list (which the point's config-group, package and
    ``hydra.`` overrides change) and then applies the point's value overrides, in order. So a
    base is composed in full once for each distinct set of the former (``sweep=default`` on
    every point: once), and each point's values are applied to a copy of it.
    """
    repository = getattr(loader, "repository", None)
    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], DictConfig] = {}
    # A grid's points share their overrides (an axis's values): each is parsed and classified
    # once, not once a point.
    parsed_once: dict[str, tuple[Override, bool]] = {}
    for point in points:
        if repository is None:
            yield _without_hydra(loader.load_sweep_config(master, list(point)))
            continue
        parsed = []
        for line in point:
            if line not in parsed_once:
                (override,) = parser.parse_overrides([line])
                parsed_once[line] = override, _sets_a_value(override, repository)
            parsed.append(parsed_once[line])
        values = [o for o, value in parsed if value]
        composed = tuple(o.input_line for o, value in parsed if not value)
        if composed not in bases:
            bases[composed] = _without_hydra(loader.load_sweep_config(master, list(composed)))
        cfg = copy.deepcopy(bases[composed])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:  # Hydra's full composition has the last word, error included
            cfg = _without_hydra(loader.load_sweep_config(master, list(point)))
        yield cfg


def _sets_a_value(override: Override, repository) -> bool:
    """Hydra's own test (its defaults list) for an override it applies to the composed config
    rather than to the defaults list; ``hydra.`` keys and packages are left to Hydra."""
    return (not override.is_hydra_override() and override.package is None
            and not override.is_sweep_override()
            and (isinstance(override.value(), dict)
                 or not repository.group_exists(override.key_or_group)))


def _without_hydra(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
