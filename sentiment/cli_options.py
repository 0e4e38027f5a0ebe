"""What the `sentiment` commands share: config options generated from the option table, and the
line that names a run."""

from __future__ import annotations

import click

from sentiment.config import PROMOTION_RULES
from sentiment.options import options as option_table


class Maybe(click.ParamType):
    """A typed option where an empty string means "not given" (how MLproject passes defaults)."""

    def __init__(self, inner) -> None:
        self.inner = click.types.convert_type(inner)
        self.name = self.inner.name

    def convert(self, value, param, ctx):
        if value is None or value == "":
            return None
        if isinstance(self.inner, click.types.BoolParamType) and isinstance(value, bool):
            return value
        return self.inner.convert(value, param, ctx)


def choice(values) -> click.Choice:
    return click.Choice(list(values), case_sensitive=False)


def config_options(names):
    """Decorate a command with the config options in ``names`` (all default to the preset).

    Name, type, choices and help come from the option table in sentiment.config, generated from
    the config dataclasses and their field docstrings.
    """
    table = option_table()

    def decorate(func):
        for name in reversed(list(names)):
            option = table[name]
            kind = choice(option.choices) if option.choices else option.kind
            help_text = option.help.replace("`", "")
            flag = f"--{name.replace('_', '-')}"
            func = click.option(flag, name, type=Maybe(kind), default="", show_default=False, help=help_text)(func)
        return func

    return decorate


def promotion_rule_options(func):
    """--promote-if and --promote-alpha, as promote, export and tune take them (train's come from
    the option table)."""
    func = click.option(
        "--promote-alpha",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.05,
        show_default=True,
        help="significance level of --promote-if significant",
    )(func)
    return click.option(
        "--promote-if",
        type=click.Choice(PROMOTION_RULES),
        default="significant",
        show_default=True,
        help="the rule, as for train --register-as",
    )(func)


def overrides_from(values: dict) -> dict:
    """Given option values (None: not given) by option name -> flat config field -> value."""
    table = option_table()
    return {table[name].field: value for name, value in values.items() if name in table}


def start_line(tracker, name: str) -> None:
    from sentiment import tracking

    click.echo(f"run {name} ({tracker.run_id}): {tracking.where_to_look(tracker.run_id)}")
