"""What a request cost, estimated from its token usage and a price table the operator sets.

``IMGSTORY_PRICES`` lists US dollars per million tokens, input then output, per model:
``gpt-4.1-mini=0.40/1.60,gpt-4.1=2/8``. A model the provider reports with a date suffix
(``gpt-4.1-mini-2025-04-14``) takes the price of the longest name it starts with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bus.settings import SettingsError
from contracts.messages import Usage

_MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]

    def price_of(self, model: str) -> Price | None:
        names = [name for name in self.prices if model == name or model.startswith(name + "-")]
        return self.prices[max(names, key=len)] if names else None

    def cost(self, calls: list[tuple[str, Usage]]) -> float | None:
        """Dollars for these (model, usage) pairs; None if any model has no price."""
        total = 0.0
        for model, usage in calls:
            price = self.price_of(model)
            if price is None:
                return None
            total += usage.input_tokens * price.input_per_million / _MILLION
            total += usage.output_tokens * price.output_per_million / _MILLION
        return round(total, 6)


def parse_prices(text: str, variable: str = "IMGSTORY_PRICES") -> PriceTable:
    """Raises SettingsError naming ``variable`` for anything that is not the format above."""
    prices: dict[str, Price] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, equals, amounts = entry.partition("=")
        given, slash, taken = amounts.partition("/")
        try:
            price = Price(float(given), float(taken))
        except ValueError:
            price = None
        if (
            not name.strip()
            or not equals
            or not slash
            or price is None
            or not all(
                math.isfinite(v) and v >= 0
                for v in (price.input_per_million, price.output_per_million)
            )
        ):
            raise SettingsError(
                f"{variable}: {entry!r} is not model=input/output (dollars per million tokens)"
            )
        prices[name.strip()] = price
    return PriceTable(prices)
