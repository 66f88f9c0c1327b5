"""Demo customers with the phones customers really type: national formats, foreign numbers, typos
and letters, empty values, and phones shared by a household; names with accents and apostrophes."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import phonenumbers

# Customers are spread over this many segments, one per day of the marketing rotation.
OFFER_SEGMENTS = 7

STORES: tuple[str, ...] = (
    "Lyon Part-Dieu",
    "Paris Rivoli",
    "Paris La Défense",
    "Marseille Prado",
    "Toulouse Wilson",
    "Bordeaux Sainte-Catherine",
    "Lille Euralille",
    "Villeneuve-d'Ascq V2",
    "Nantes Atlantis",
    "Strasbourg Kléber",
    "Nice Étoile",
    "Montpellier Odysseum",
    "Rennes Alma",
    "Grenoble Grand'Place",
)

# fmt: off
FR_FIRST_NAMES: tuple[str, ...] = (
    "Zoé", "Élodie", "Chloé", "Hélène", "Léa", "Noémie", "Jérôme", "François", "Loïc", "Anaïs",
    "Maëlle", "Raphaël", "Benoît", "Cédric", "Gaëlle", "Inès", "Joël", "Mélanie", "Agnès", "Céline",
    "Camille", "Lucas", "Hugo", "Emma", "Louis", "Manon", "Nathan", "Sarah", "Julien", "Thomas",
    "Marie", "Pierre", "Sophie", "Nicolas", "Claire", "Antoine", "Laura", "Maxime", "Julie", "Paul",
    "Jean-Luc", "Marie-Hélène", "Anne-Sophie", "N'Golo", "D'Arcy", "Yasmine", "Mamadou", "Aïcha",
)
FR_LAST_NAMES: tuple[str, ...] = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet",
    "François", "Gonçalves", "N'Diaye", "Le Gall", "de La Fontaine", "Traoré", "Nguyen", "Müller",
)
BE_FIRST_NAMES: tuple[str, ...] = ("Wout", "Lotte", "Sien", "Maxime", "Amélie", "Thibault", "Noé")
BE_LAST_NAMES: tuple[str, ...] = ("Peeters", "Janssens", "Maes", "Dubois", "Lemaire", "Claes")
US_FIRST_NAMES: tuple[str, ...] = ("Emily", "Michael", "Jessica", "Dwayne", "Siobhán", "O'Shea")
US_LAST_NAMES: tuple[str, ...] = ("Smith", "Johnson", "O'Brien", "Williams", "Brown")

# fmt: on

# Area codes with the fictional 555-01XX exchange: valid for libphonenumber, nobody's phone.
US_AREA_CODES: tuple[str, ...] = ("212", "415", "312", "617", "305", "206", "512", "303")


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _valid(e164: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(e164, None))


def _unique_valid(used: set[str], make: Callable[[], str]) -> str:
    while True:
        candidate = make()
        if candidate not in used and _valid(candidate):
            used.add(candidate)
            return candidate


def _french_mobile(rng: random.Random, used: set[str]) -> str:
    # Mostly 06, some 07, as in the French mobile plan.
    return _unique_valid(
        used, lambda: "+33" + rng.choices("67", weights=(75, 25))[0] + _digits(rng, 8)
    )


def _national(e164: str, rng: random.Random) -> str:
    """'+33612345678' -> '06 12 34 56 78' or '0612345678', as customers type them in forms."""
    national = "0" + e164[3:]
    if rng.random() < 0.5:
        return " ".join(national[i : i + 2] for i in range(0, 10, 2))
    return national


def _malformed(rng: random.Random) -> str | None:
    kind = rng.randrange(5)
    if kind == 0:
        return "+33 6 " + _digits(rng, 2)  # too short
    if kind == 1:
        return f"+33 6 {_digits(rng, 2)} AB {_digits(rng, 2)} {_digits(rng, 2)}"  # letters
    if kind == 2:
        return ""
    if kind == 3:
        return None
    return "06" + _digits(rng, 5)  # truncated national number


def generate_customers(rng: random.Random, count: int) -> list[dict[str, Any]]:
    used: set[str] = set()
    rows: list[dict[str, Any]] = []
    epoch = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    for index in range(1, count + 1):
        draw = rng.random()
        if draw < 0.08:
            country = "BE"
            phone: str | None = _unique_valid(used, lambda: "+324" + _digits(rng, 8))
            first, last = rng.choice(BE_FIRST_NAMES), rng.choice(BE_LAST_NAMES)
        elif draw < 0.11:
            country = "US"
            phone = _unique_valid(
                used, lambda: f"+1{rng.choice(US_AREA_CODES)}55501{_digits(rng, 2)}"
            )
            first, last = rng.choice(US_FIRST_NAMES), rng.choice(US_LAST_NAMES)
        else:
            country = "FR"
            first, last = rng.choice(FR_FIRST_NAMES), rng.choice(FR_LAST_NAMES)
            if draw < 0.13:
                phone = _malformed(rng)
            elif draw < 0.23:
                phone = _national(_french_mobile(rng, used), rng)
            else:
                phone = _french_mobile(rng, used)
        tier = rng.choices(("gold", "silver", "bronze"), weights=(18, 35, 47))[0]
        rows.append(
            {
                "customer_id": f"C{index:06d}",
                "phone": phone,
                "first_name": first,
                "last_name": last,
                "country": country,
                "loyalty_tier": tier,
                "preferred_store": rng.choice(STORES),
                "offer_segment": index % OFFER_SEGMENTS,
                "created_at": epoch + dt.timedelta(seconds=rng.randrange(7 * 365 * 86_400)),
            }
        )
    _share_family_phones(rng, rows)
    return rows


def _share_family_phones(rng: random.Random, rows: list[dict[str, Any]]) -> None:
    # About 1 customer in 150 shares a French mobile with another (a household): two customer_ids,
    # one recipient; the pipeline must not message that phone twice in a day.
    french = [
        row
        for row in rows
        if row["country"] == "FR" and row["phone"] and str(row["phone"]).startswith("+33")
    ]
    pairs = min(len(french) // 2, max(1, len(rows) // 150)) if len(french) >= 2 else 0
    chosen = rng.sample(french, pairs * 2)
    for owner, relative in zip(chosen[::2], chosen[1::2], strict=True):
        relative["phone"] = owner["phone"]
        relative["last_name"] = owner["last_name"]
