"""Fictional biographies: the generated example of the ``documents`` domain (Physics of Language Models 3.1's bioS
design, Allen-Zhu & Li 2023): people whose six attributes are drawn at random from fixed pools, each person's
biography written in several renderings (every sentence from one of several templates, sentences in a shuffled
order after the first), and one question per attribute.

Nothing here is true of anyone, and no answer can be known without reading the person's biography: names are drawn
from three pools (first, middle, last) so that no full name repeats, and the attributes independently (the
employer's city follows the employer). A question's chance is one over its pool's size.

``records(n_people, seed)`` gives the records in the documents domain's JSONL format, the same bytes for the same
arguments; ``python -m inweights.domains.biographies --people 60 --seed 0 > bios.jsonl`` writes them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from inweights.core.seeds import derive_seed

FIRST = ["Anya", "Bram", "Celia", "Dorian", "Elsa", "Faris", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lucan",
         "Mirela", "Nico", "Odile", "Pavel", "Quinn", "Rosalind", "Soren", "Talia", "Ulric", "Vera", "Wendel",
         "Xenia", "Yusuf", "Zora", "Alaric", "Bettina", "Cosimo", "Delphine"]
# the first names of people drawn for a preparation (``fresh``): none is an experiment's, whatever the seeds
PREPARE_FIRST = ["Aurelio", "Brigida", "Casimir", "Dagny", "Evander", "Fiora", "Gunnar", "Hestia", "Ignatius",
                 "Jolanta", "Kasimir", "Leocadia", "Magnus", "Nerissa", "Orrin", "Philippa", "Rainer", "Sabine",
                 "Thaddeus", "Ursula", "Valentin", "Wilhelmina", "Xavier", "Ysolde", "Zacharias", "Agatha",
                 "Bartholomew", "Clementine", "Desmond", "Eulalia"]
MIDDLE = ["Ash", "Bell", "Cole", "Dale", "Eve", "Fern", "Gray", "Hale", "Ivy", "Jude", "Kent", "Lane", "Mae",
          "Noel", "Opal", "Pierce", "Rae", "Sage", "Tate", "Wren"]
LAST = ["Abernathy", "Blackwood", "Castellan", "Drummond", "Everly", "Fairbanks", "Galloway", "Hartigan",
        "Islington", "Jessop", "Kilbride", "Lockhart", "Marchetti", "Northcott", "Oyelaran", "Pemberton",
        "Quarles", "Ravensworth", "Stroud", "Thistlewood", "Umberfield", "Vasquez", "Whitcombe", "Yardley",
        "Zabini", "Ashcombe", "Brightwater", "Corrigan", "Delacroix", "Fennimore"]
CITIES = ["Princeton, NJ", "Boulder, CO", "Savannah, GA", "Tacoma, WA", "Madison, WI", "Tucson, AZ", "Albany, NY",
          "Eugene, OR", "Durham, NC", "Reno, NV", "Provo, UT", "Dayton, OH", "Fresno, CA", "Bangor, ME",
          "Lubbock, TX", "Topeka, KS", "Billings, MT", "Mobile, AL", "Erie, PA", "Duluth, MN"]
UNIVERSITIES = ["Rice University", "Tufts University", "Purdue University", "Emory University", "Baylor University",
                "Clemson University", "Drexel University", "Fordham University", "Lehigh University",
                "Temple University", "Auburn University", "Brandeis University", "Creighton University",
                "Gonzaga University", "Howard University", "Marquette University", "Villanova University",
                "Wake Forest University", "Colgate University", "Bucknell University"]
MAJORS = ["Communications", "Marine Biology", "Civil Engineering", "Art History", "Economics", "Linguistics",
          "Astronomy", "Nursing", "Philosophy", "Geology", "Statistics", "Architecture", "Music Theory",
          "Chemical Engineering", "Anthropology", "Forestry", "Journalism", "Neuroscience", "Accounting",
          "Urban Planning"]
EMPLOYERS = [("Halvorsen Freight", "Omaha, NE"), ("Lumina Textiles", "Charlotte, NC"),
             ("Brightline Optics", "Rochester, NY"), ("Cobalt Ridge Mining", "Butte, MT"),
             ("Meridian Foods", "Boise, ID"), ("Northwind Ferries", "Juneau, AK"),
             ("Pinecrest Insurance", "Hartford, CT"), ("Quillstone Press", "Ann Arbor, MI"),
             ("Redfern Aerospace", "Wichita, KS"), ("Silverlake Pharma", "Trenton, NJ"),
             ("Tamarack Software", "Burlington, VT"), ("Umber Glassworks", "Toledo, OH"),
             ("Vantage Turbines", "Schenectady, NY"), ("Willowmere Bank", "Richmond, VA"),
             ("Yellowpine Lumber", "Spokane, WA"), ("Zephyr Kites", "Kitty Hawk, NC"),
             ("Amberfield Dairy", "Green Bay, WI"), ("Basalt Robotics", "Pittsburgh, PA"),
             ("Crescent Theatres", "Memphis, TN"), ("Driftwood Hotels", "Galveston, TX")]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# one sentence per attribute; {name} is the full name in the first sentence, the pronoun after it
TEMPLATES: dict[str, list[str]] = {
    "birth_date": ["{name} was born on {value}.", "{name} came into this world on {value}.",
                   "{name}'s birthday is {value}.", "{name} celebrates a birthday every year on {value}.",
                   "{name} was born on the day of {value}."],
    "birth_city": ["{name} was born in {value}.", "{name} spent the early years in {value}.",
                   "{name}'s birthplace is {value}.", "{name} grew up in {value}, the city of birth.",
                   "{name} first saw the light of day in {value}."],
    "university": ["{name} studied at {value}.", "{name} graduated from {value}.",
                   "{name} received an education at {value}.", "{name} is a graduate of {value}.",
                   "{name} completed a degree at {value}."],
    "major": ["{name} majored in {value}.", "{name} earned a degree in {value}.", "{name}'s field of study was {value}.",
              "{name} chose {value} as the main subject.", "{name} specialised in {value}."],
    "employer": ["{name} worked for {value}.", "{name} was employed by {value}.", "{name} held a job at {value}.",
                 "{name} built a career at {value}.", "{name} joined the staff of {value}."],
    "employer_city": ["{name} worked in {value}.", "{name}'s office was in {value}.", "{name} commuted to {value}.",
                      "{name} had a workplace in {value}.", "{name} spent working days in {value}."],
}
QUESTIONS = {"birth_date": "What is the birth date of {name}?", "birth_city": "Which city was {name} born in?",
             "university": "Which university did {name} study at?", "major": "What did {name} major in?",
             "employer": "Which company did {name} work for?", "employer_city": "Which city did {name} work in?"}
ATTRIBUTES = tuple(QUESTIONS)
N_DATES = 12 * 28 * 20  # months x days 1-28 x years 1950-1969


def person(rng: random.Random, name: str) -> dict[str, str]:
    employer, employer_city = rng.choice(EMPLOYERS)
    date = f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1950, 1969)}"
    return {"name": name, "pronoun": rng.choice(["He", "She"]), "birth_date": date, "birth_city": rng.choice(CITIES),
            "university": rng.choice(UNIVERSITIES), "major": rng.choice(MAJORS), "employer": employer,
            "employer_city": employer_city}


def rendering(p: dict[str, str], rng: random.Random) -> str:
    """One biography: every attribute's sentence from a random template; the birth date first (it names the
    person), the others in a random order and with the pronoun."""
    rest = list(ATTRIBUTES[1:])
    rng.shuffle(rest)
    out = []
    for i, attr in enumerate(["birth_date", *rest]):
        who = p["name"] if i == 0 else p["pronoun"]
        s = rng.choice(TEMPLATES[attr]).format(name=who, value=p[attr])
        out.append(s.replace(f"{p['pronoun']}'s", "His" if p["pronoun"] == "He" else "Her"))
    return " ".join(out)


def chance_of(attr: str) -> float:
    pools = {"birth_date": N_DATES, "birth_city": len(CITIES), "university": len(UNIVERSITIES), "major": len(MAJORS),
             "employer": len(EMPLOYERS), "employer_city": len(EMPLOYERS)}
    return 1.0 / pools[attr]


def record(rng: random.Random, name: str, renderings: int) -> dict[str, Any]:
    """One person's record (documents JSONL format): ``renderings`` renderings of the biography, six questions."""
    p = person(rng, name)
    texts = [rendering(p, rng) for _ in range(renderings)]
    qs = [{"question": QUESTIONS[a].format(name=name), "answer": p[a], "chance": chance_of(a), "attribute": a}
          for a in ATTRIBUTES]
    return {"name": name, "text": texts, "questions": qs}


def draw_name(rng: random.Random, taken: set[str], first: list[str] = FIRST) -> str:
    for _ in range(10_000):
        name = f"{rng.choice(first)} {rng.choice(MIDDLE)} {rng.choice(LAST)}"
        if name not in taken:
            return name
    raise ValueError("no free name left in the pools")


def records(n_people: int, seed: int, renderings: int = 5) -> list[dict[str, Any]]:
    """``n_people`` biography records (documents JSONL format): text as ``renderings`` renderings, six questions."""
    if n_people > len(FIRST) * len(MIDDLE) * len(LAST):
        raise ValueError(f"at most {len(FIRST) * len(MIDDLE) * len(LAST)} people have distinct names")
    rng = random.Random(derive_seed(seed, "biographies", n_people, renderings))
    names: set[str] = set()
    out = []
    while len(out) < n_people:
        name = f"{rng.choice(FIRST)} {rng.choice(MIDDLE)} {rng.choice(LAST)}"
        if name in names:
            continue
        names.add(name)
        out.append(record(rng, name, renderings))
    return out


def fresh_record(rng: random.Random, taken: set[str], renderings: int = 5) -> dict[str, Any]:
    """A person for a preparation: first names from ``PREPARE_FIRST``, never an experiment's."""
    return record(rng, draw_name(rng, taken, PREPARE_FIRST), renderings)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inweights.domains.biographies",
                                 description="Write fictional biographies as a documents-domain JSONL file.")
    ap.add_argument("--people", type=int, default=60, help="how many people (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="the seed (default 0)")
    ap.add_argument("--renderings", type=int, default=5, help="renderings of each biography (default 5)")
    a = ap.parse_args(argv)
    most = len(FIRST) * len(MIDDLE) * len(LAST)
    if not 1 <= a.people <= most or a.renderings < 1:
        print(f"biographies: --people must be 1 to {most} (distinct names) and --renderings at least 1", file=sys.stderr)
        return 2
    sys.stdout.write("".join(json.dumps(r) + "\n" for r in records(a.people, a.seed, a.renderings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
