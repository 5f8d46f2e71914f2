"""Registry of physics models for the embedded Pythia 8 generator (pp at 13 TeV).

Each model maps a parameter dict to a list of Pythia setting strings. The
registry validates the parameters first (unknown names, missing required
values, wrong types, impossible mass combinations) and raises a
:class:`~resonant.errors.ConfigError` that names the model and the parameter.

Usage::

    from resonant.data.processes import MODELS, pythia_settings
    MODELS["wprime_xy"].resolve({"m_res": 3500, "m_x": 500, "m_y": 100})
    pythia_settings("qcd_dijet", {"pthat_min": 1100}, seed=12345)

The zoo of dijet resonances near 3.5 TeV:

==============  ==========================================  ===================
model           physics                                     jet substructure
==============  ==========================================  ===================
qcd_dijet       QCD 2 -> 2, pTHat > pthat_min (background)  none (1-prong)
wprime_xy       W' -> X Y, X, Y -> q q (LHC Olympics R&D)   2-prong, heavy
wprime_wz       W' -> W Z, W, Z -> hadrons (SM masses)      2-prong, light
zprime_ttbar    Z' -> t tbar, t -> b W, W -> q q            3-prong
qstar_qg        excited quark q* -> q g                     none (1-prong)
scalar_xy       H2 -> X Y (new scalars), X, Y -> q q        2-prong, scalar
==============  ==========================================  ===================
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError

E_CM = 13000.0  # GeV
SEED_MIN = 1  # Random:seed = 0 would mean "seed from the clock": never reproducible
SEED_MAX = 900_000_000  # Pythia's upper limit for Random:seed

# Quarks the re-massed two-prong bosons of the signal models decay to:
# u, d, s only, so the signal jets carry no heavy flavour from the hard decay.
LIGHT_QUARKS = (1, 2, 3)

# Forced width of the new resonances and of the re-massed X, Y, as a fraction
# of their mass, and the window (in widths) their Breit-Wigner is cut to.
DEFAULT_WIDTH_FRAC = 0.01
MASS_WINDOW_WIDTHS = 10.0

COMMON_SETTINGS = (
    f"Beams:eCM = {E_CM:.1f}",
    # Quiet logs: no banner, no init tables, no event listings or counters.
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
)

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One model parameter: a finite real number, strictly above ``minimum``."""

    name: str
    doc: str
    default: object = REQUIRED
    minimum: float = 0.0
    maximum: float = math.inf

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Model:
    """A physics model: validated parameters -> Pythia setting strings."""

    name: str
    doc: str
    params: tuple[Param, ...]
    build: Callable[[dict], list[str]]
    signal: bool
    check: Callable[[dict], None] | None = None
    param_names: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "param_names", tuple(p.name for p in self.params))

    def resolve(self, params: dict | None) -> dict:
        """Parameters with defaults filled in; raise ``ConfigError`` on bad input."""
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"params ({self.name})", f"must be a mapping of parameter names to numbers, got "
                              f"{type(params).__name__}", f"pass e.g. {self._example()}")
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise ConfigError(f"params.{unknown[0]}", f"model '{self.name}' has no parameter(s) "
                              f"{', '.join(map(repr, unknown))}",
                              f"use only {', '.join(self.param_names)}")
        out = {}
        for p in self.params:
            if p.name not in params or params[p.name] is None:
                if p.required:
                    raise ConfigError(f"params.{p.name}", f"model '{self.name}' needs parameter '{p.name}' "
                                      f"({p.doc})", f"pass e.g. {self._example()}")
                out[p.name] = p.default
                continue
            v = params[p.name]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ConfigError(f"params.{p.name}", f"model '{self.name}': parameter '{p.name}' must be a "
                                  f"finite number, got {v!r}", f"set {p.name} to a number ({p.doc})")
            if not p.minimum < v < p.maximum:
                rng = f"> {p.minimum:g}" + (f" and < {p.maximum:g}" if math.isfinite(p.maximum) else "")
                raise ConfigError(f"params.{p.name}", f"model '{self.name}': parameter '{p.name}' = {v!r} "
                                  f"out of range, must be {rng}", f"set {p.name} {rng} ({p.doc})")
            out[p.name] = float(v)
        if self.check is not None:
            self.check(out)
        return out

    def settings(self, params: dict | None) -> list[str]:
        """Validated Pythia settings of this model (without the common ones)."""
        return self.build(self.resolve(params))

    __call__ = settings

    def _example(self) -> str:
        ex = {p.name: (3500 if p.name == "m_res" else 500 if p.name == "m_x" else 100 if p.name == "m_y"
                       else p.default) for p in self.params if p.required or p.name == "pthat_min"}
        return repr(ex)


MODELS: dict[str, Model] = {}


def register(name: str, *params: Param, signal: bool, check: Callable[[dict], None] | None = None):
    """Decorator adding a settings builder to :data:`MODELS` (its docstring is the model's doc)."""

    def deco(fn):
        if name in MODELS:
            raise ValueError(f"model '{name}' registered twice")
        doc = (fn.__doc__ or "").strip()
        MODELS[name] = Model(name, doc, tuple(params), fn, signal, check)
        return fn

    return deco


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> Model:
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError("model", f"unknown model {name!r}", f"choose one of {', '.join(model_names())}")
    return MODELS[name]


def resolve_params(model: str, params: dict | None) -> dict:
    """The model's parameters with defaults filled in, validated."""
    return get_model(model).resolve(params)


def seed_settings(seed: int) -> list[str]:
    """Pythia's seed settings; ``seed`` must be in [SEED_MIN, SEED_MAX]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not SEED_MIN <= seed <= SEED_MAX:
        raise ConfigError("seed", f"Pythia seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {seed!r}",
                          "derive it with resonant.data.generate.chunk_seed (0 would seed from the clock)")
    return ["Random:setSeed = on", f"Random:seed = {int(seed)}"]


def pythia_settings(model: str, params: dict | None, seed: int | None = None) -> list[str]:
    """All setting strings for one Pythia instance: common + model (+ seed)."""
    out = list(COMMON_SETTINGS) + get_model(model).settings(params)
    if seed is not None:
        out += seed_settings(seed)
    return out


# ----------------------------------------------------------------------------
# Helpers shared by the models


def _num(x: float) -> str:
    """Format a number for a Pythia setting string (stable, no exponent surprises)."""
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _narrow(pid: int, mass: float, width_frac: float, m_floor: float = 0.0) -> list[str]:
    """Re-mass ``pid`` to ``mass`` with a forced narrow Breit-Wigner cut to a window."""
    width = width_frac * mass
    lo = max(mass - MASS_WINDOW_WIDTHS * width, m_floor, 0.5 * mass)
    hi = mass + MASS_WINDOW_WIDTHS * width
    return [
        f"{pid}:m0 = {_num(mass)}",
        f"{pid}:mWidth = {_num(width)}",
        f"{pid}:doForceWidth = on",
        f"{pid}:mMin = {_num(lo)}",
        f"{pid}:mMax = {_num(hi)}",
    ]


def _w_to(pid: int, quarks) -> list[str]:
    """Let the W (24) decay only to the up-type/down-type quark pairs within ``quarks``."""
    up = [q for q in quarks if q % 2 == 0]
    down = [q for q in quarks if q % 2 == 1]
    out = [f"{pid}:onMode = off"]
    out += [f"{pid}:onIfMatch = {d} {u}" for u in up for d in down]
    return out


def _any_of(pid: int, products) -> list[str]:
    return [f"{pid}:onMode = off", f"{pid}:onIfAny = {' '.join(str(q) for q in products)}"]


_WIDTH = Param("width_frac", "forced width of the heavy resonance (and of X, Y) as a fraction of its mass",
               default=DEFAULT_WIDTH_FRAC, minimum=0.0, maximum=0.2)


def _check_xy(model: str):
    def check(p: dict) -> None:
        lo_x = p["m_x"] * (1 - MASS_WINDOW_WIDTHS * p["width_frac"])
        lo_y = p["m_y"] * (1 - MASS_WINDOW_WIDTHS * p["width_frac"])
        if p["m_x"] + p["m_y"] >= p["m_res"] or max(lo_x, 0.5 * p["m_x"]) + max(lo_y, 0.5 * p["m_y"]) >= p["m_res"]:
            raise ConfigError("params.m_res", f"model '{model}': m_x + m_y = {p['m_x'] + p['m_y']:g} GeV must be "
                              f"well below m_res = {p['m_res']:g} GeV for an on-shell decay",
                              "lower m_x/m_y or raise m_res")

    return check


def _resonance_window(pid: int, m_res: float, width_frac: float, m_floor: float) -> list[str]:
    """Forced width and a +-MASS_WINDOW_WIDTHS window for the heavy s-channel resonance.

    Without the window the parton luminosity pulls a large off-shell tail
    (10% of W' events below 1.1 TeV for a 3.5 TeV W' with its natural width).
    """
    return _narrow(pid, m_res, width_frac, m_floor)


# ----------------------------------------------------------------------------
# The models


def _wprime_to_wz(p: dict, m_floor: float) -> list[str]:
    """A W' of mass m_res, produced in q q' -> W', decaying only to W Z."""
    return [
        "NewGaugeBoson:ffbar2Wprime = on",
        "Wprime:coup2WZ = 1.0",
        *_resonance_window(34, p["m_res"], p["width_frac"], m_floor),
        "34:onMode = off",
        "34:onIfMatch = 24 23",
    ]


@register("qcd_dijet", Param("pthat_min", "minimum pTHat of the 2 -> 2 QCD process in GeV", default=850.0,
                             maximum=E_CM / 2), signal=False)
def qcd_dijet(p: dict) -> list[str]:
    """QCD multijet background: all hard QCD 2 -> 2 processes with pTHat > pthat_min, MPI on.

    The generator cut must sit well below the selection (leading R=1.0 jet
    pT > 1.2 TeV), since radiation and the underlying event let events with a
    lower pTHat pass it. Measured against a sample with pTHat > 700 GeV: with
    the default 850 GeV, 97-100% of the selected events with m_jj > 2.6 TeV
    pass, but only ~90% at 2.3-2.6 TeV; with 1.1 TeV, 65-90% (m_jj-dependent).
    Only 16% of the generated events pass the selection at 850 GeV (66% at
    1.1 TeV, ~6% at 700 GeV): 700 GeV is unbiased over the whole 2.3-5 TeV range.
    """
    return [
        "HardQCD:all = on",
        f"PhaseSpace:pTHatMin = {_num(p['pthat_min'])}",
        "PartonLevel:MPI = on",
    ]


@register("wprime_xy",
          Param("m_res", "W' mass in GeV", maximum=E_CM),
          Param("m_x", "mass of X (the re-massed W) in GeV", minimum=10.0),
          Param("m_y", "mass of Y (the re-massed Z) in GeV", minimum=10.0),
          _WIDTH, signal=True, check=_check_xy("wprime_xy"))
def wprime_xy(p: dict) -> list[str]:
    """W' -> X Y with X, Y -> q qbar (u, d, s): two two-prong jets of masses m_x and m_y.

    The LHC Olympics R&D signal is (m_res, m_x, m_y) = (3500, 500, 100). Done as
    W' (34) -> W Z with the W (24) re-massed to m_x and the Z (23) to m_y, both
    with a forced narrow width and a mass window so they appear at the requested
    masses.
    """
    m_floor = (p["m_x"] + p["m_y"]) * 1.001
    return [
        *_wprime_to_wz(p, m_floor),
        *_narrow(24, p["m_x"], p["width_frac"]),
        *_w_to(24, LIGHT_QUARKS),
        *_narrow(23, p["m_y"], p["width_frac"]),
        *_any_of(23, LIGHT_QUARKS),
        "PartonLevel:MPI = on",
    ]


@register("wprime_wz", Param("m_res", "W' mass in GeV", minimum=200.0, maximum=E_CM), _WIDTH, signal=True)
def wprime_wz(p: dict) -> list[str]:
    """W' -> W Z with the SM W and Z decaying hadronically: two light two-prong jets (80, 91 GeV)."""
    return [
        *_wprime_to_wz(p, 175.0),
        *_w_to(24, (1, 2, 3, 4, 5)),
        *_any_of(23, (1, 2, 3, 4, 5)),
        "PartonLevel:MPI = on",
    ]


@register("zprime_ttbar", Param("m_res", "Z' mass in GeV", minimum=400.0, maximum=E_CM), _WIDTH, signal=True)
def zprime_ttbar(p: dict) -> list[str]:
    """Z' -> t tbar with fully hadronic tops (t -> b W, W -> q q'): two three-prong jets."""
    return [
        "NewGaugeBoson:ffbar2gmZZprime = on",
        "Zprime:gmZmode = 3",  # pure Z', no gamma*/Z interference
        *_resonance_window(32, p["m_res"], p["width_frac"], 350.0),
        "32:onMode = off",
        "32:onIfAny = 6",
        *_w_to(24, (1, 2, 3, 4, 5)),
        "PartonLevel:MPI = on",
    ]


@register("qstar_qg", Param("m_res", "excited-quark mass (and compositeness scale) in GeV", minimum=200.0,
                            maximum=E_CM), signal=True)
def qstar_qg(p: dict) -> list[str]:
    """Excited quark q* -> q g (u*, d*), Lambda = m_res: a dijet resonance without substructure."""
    m = _num(p["m_res"])
    return [
        "ExcitedFermion:dg2dStar = on",
        "ExcitedFermion:ug2uStar = on",
        f"ExcitedFermion:Lambda = {m}",
        f"4000001:m0 = {m}",
        f"4000002:m0 = {m}",
        f"4000001:mMin = {_num(0.5 * p['m_res'])}",
        f"4000002:mMin = {_num(0.5 * p['m_res'])}",
        f"4000001:mMax = {_num(1.5 * p['m_res'])}",
        f"4000002:mMax = {_num(1.5 * p['m_res'])}",
        "4000001:onMode = off",
        "4000001:onIfMatch = 1 21",
        "4000002:onMode = off",
        "4000002:onIfMatch = 2 21",
        "PartonLevel:MPI = on",
    ]


X_ID, Y_ID = 9000001, 9000002


@register("scalar_xy",
          Param("m_res", "H2 mass in GeV", maximum=E_CM),
          Param("m_x", "mass of the new scalar X in GeV", minimum=10.0),
          Param("m_y", "mass of the new scalar Y in GeV", minimum=10.0),
          _WIDTH, signal=True, check=_check_xy("scalar_xy"))
def scalar_xy(p: dict) -> list[str]:
    """Heavy scalar H2 (gg -> H2) -> X Y, new scalars X, Y -> q qbar (u, d, s): two-prong jets.

    X and Y are new particles (9000001, 9000002) defined with ``new`` and
    decaying through ``addChannel``; H2 gets a forced width and only the X Y
    channel open.
    """
    wf = p["width_frac"]
    out = [
        "Higgs:useBSM = on",
        "HiggsBSM:gg2H2 = on",
        *_resonance_window(35, p["m_res"], wf, (p["m_x"] + p["m_y"]) * 1.001),
        "35:onMode = off",
        f"35:addChannel = 1 1.0 100 {X_ID} {Y_ID}",
    ]
    for pid, name, mass in ((X_ID, "X", p["m_x"]), (Y_ID, "Y", p["m_y"])):
        lo = max(mass * (1 - MASS_WINDOW_WIDTHS * wf), 0.5 * mass)
        out += [
            f"{pid}:new = {name} void 1 0 0 {_num(mass)} {_num(wf * mass)} {_num(lo)} "
            f"{_num(mass * (1 + MASS_WINDOW_WIDTHS * wf))} 0",
            f"{pid}:isResonance = on",
            f"{pid}:mayDecay = on",
            f"{pid}:doForceWidth = on",
        ]
        out += [f"{pid}:addChannel = 1 {_num(1.0 / len(LIGHT_QUARKS))} 100 {q} -{q}" for q in LIGHT_QUARKS]
    out.append("PartonLevel:MPI = on")
    return out


# ----------------------------------------------------------------------------
# Further Standard Model backgrounds: small next to QCD in the dijet final state,
# but distinct process groups for the contrastive encoder's background-only
# configuration (hadronic tops and bosons give two- and three-prong jets).

_PTHAT = Param("pthat_min", "minimum pTHat of the 2 -> 2 process in GeV", default=850.0, maximum=E_CM / 2)


@register("sm_ttbar", _PTHAT, signal=False)
def sm_ttbar(p: dict) -> list[str]:
    """SM top pairs (gg, q qbar -> t tbar), fully hadronic, pTHat > pthat_min: boosted three-prong jets."""
    return [
        "Top:gg2ttbar = on",
        "Top:qqbar2ttbar = on",
        f"PhaseSpace:pTHatMin = {_num(p['pthat_min'])}",
        *_w_to(24, (1, 2, 3, 4, 5)),
        "PartonLevel:MPI = on",
    ]


@register("sm_vjet", _PTHAT, signal=False)
def sm_vjet(p: dict) -> list[str]:
    """SM W or Z plus a jet (q g, q qbar), the boson decaying to quarks, pTHat > pthat_min: a two-prong jet."""
    return [
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",  # the Z alone, no photon
        f"PhaseSpace:pTHatMin = {_num(p['pthat_min'])}",
        *_w_to(24, (1, 2, 3, 4, 5)),
        *_any_of(23, (1, 2, 3, 4, 5)),
        "PartonLevel:MPI = on",
    ]
