"""``faceverify serve``: the REST service on uvicorn.

    faceverify serve --model PATH --gallery DIR --host 127.0.0.1 --port 8000
    faceverify serve --model PATH --gallery postgresql://USER@HOST:PORT/DB   # several replicas, one gallery

Every option is a field of ``faceverify.service.Settings``, generated from its declaration (name,
type, default, description, environment variable): there is no option list here. API keys come
from ``FACEVERIFY_API_KEY`` (comma-separated) or ``FACEVERIFY_API_KEY_FILE`` only. The model is
loaded and the gallery opened before the port is bound, so a bad model or gallery fails with a
clear message (``faceverify.service.app.serve``).
"""

from __future__ import annotations

import argparse
import logging
import typing
from pathlib import Path

from ..threads import apply_wait_policy
from . import run

DESCRIPTION = "Run the faceverify REST service. Every option is a service setting (faceverify.service.Settings)."


def settings_model(model: type | None = None) -> type:
    """``model``, or the service's ``Settings``: imported here, after ``apply_wait_policy`` (the
    service imports faiss, which loads OpenMP)."""
    if model is not None:
        return model
    from ..service.settings import Settings

    return Settings


def setting_options(model: type | None = None) -> list[tuple[str, str, dict]]:
    """``(field, flag, add_argument keywords)`` of each field of the settings ``model`` that has a
    command-line flag. An option not given is None, so that ``Settings.from_env`` tells it from a
    given one; its default and environment variable are in its help."""
    model = settings_model(model)
    options = []
    for name, field in model.model_fields.items():
        declared = model.declared(name)
        if declared.flag is None:
            continue
        kind, choices = value_type(field.annotation)
        keywords: dict = {"default": None, "help": help_text(field, declared)}
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction  # --flag / --no-flag
        else:
            keywords.update(type=float if declared.unit != 1 else kind, choices=choices)
        options.append((name, declared.flag, keywords))
    return options


def value_type(annotation) -> tuple[type, tuple | None]:
    """The option's type and choices: ``Literal`` -> str and its values; ``X | None`` -> X's;
    ``Path`` -> str (the settings convert it)."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, typing.get_args(annotation)
    if annotation in (int, float, bool):
        return annotation, None
    if annotation in (str, Path):
        return str, None
    given = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(given) == 1 and len(typing.get_args(annotation)) == 2:  # X | None
        return value_type(given[0])
    raise TypeError(f"a setting of type {annotation} has no command-line form: declare it with flag=None")


def help_text(field, declared) -> str:
    """The field's description, its default (in the option's unit) and its environment variable."""
    details = []
    if field.default is not None:
        default = field.default / declared.unit if declared.unit != 1 else field.default
        details.append(f"default: {default:g}" if isinstance(default, float) else f"default: {default}")
    if declared.env:
        details.append(f"env {declared.env}")
    text = field.description + (f" ({'; '.join(details)})" if details else "")
    return text.replace("%", "%%")  # argparse formats help with %


def build_parser(model: type | None = None) -> argparse.ArgumentParser:
    model = settings_model(model)
    from_env_only = [f"{model.declared(name).env}: {field.description}" for name, field in model.model_fields.items()
                     if model.declared(name).flag is None]
    parser = argparse.ArgumentParser(prog="faceverify serve", description=DESCRIPTION,
                                     epilog=("Read from the environment only. " + " ".join(f"{line}." for line in from_env_only)).replace("%", "%%"))
    for _, flag, keywords in setting_options(model):
        parser.add_argument(flag, **keywords)
    return parser


def given_settings(args: argparse.Namespace, model: type | None = None) -> dict:
    """The settings the command line gives: field name -> value (None: not given), in the field's unit."""
    model = settings_model(model)
    values = {}
    for name, flag, _ in setting_options(model):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))  # argparse's dest for the flag
        unit = model.declared(name).unit
        values[name] = value if value is None or unit == 1 else int(value * unit)
    return values


def main(argv: list[str] | None = None) -> int:
    apply_wait_policy()  # before any OpenMP runtime loads (torch, faiss: the settings import the service)
    args = build_parser().parse_args(argv)
    return run("serve", lambda: serve(args))


def serve(args: argparse.Namespace) -> None:
    from ..models import resolve_model
    from ..service.app import serve as serve_app
    from ..threads import latency_threads

    values = given_settings(args)
    values["model"] = resolve_model(values["model"]).path
    values["torch_threads"] = latency_threads(values["torch_threads"])  # the latency policy: 1 unless given
    settings = settings_model().from_env(**values)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    serve_app(settings)
