"""Project ontology: which model classes become which labeled objects.

Format (a JSON file):
    {"objects": [{"class": "circle", "name": "Circle", "featureHash": "a1b2c3d4", "color": "#E6194B"}]}
An Encord-style object list (`name`, `featureNodeHash`, `color`, no `class`) also
works: objects are then matched to model classes by name, case-insensitively.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.keys import key_of

PALETTE = (
    "#E6194B", "#3CB44B", "#4363D8", "#F58231", "#911EB4", "#42D4F4", "#F032E6", "#BFEF45",
    "#FABED4", "#469990", "#DCBEFF", "#9A6324", "#FFFAC8", "#800000", "#AAFFC3", "#808000",
)
_SKIP = {"N/A", "__background__"}  # torchvision's COCO list has placeholder classes


@dataclass(frozen=True)
class OntologyObject:
    class_name: str
    name: str
    feature_hash: str
    color: str


@dataclass(frozen=True)
class Ontology:
    """Model class name -> ontology object; classes absent here are dropped."""

    objects: dict[str, OntologyObject]

    @property
    def digest(self) -> str:
        return key_of(sorted((o.class_name, o.name, o.feature_hash, o.color) for o in self.objects.values()))

    def to_json(self) -> dict:
        return {
            "objects": [
                {"class": o.class_name, "name": o.name, "featureHash": o.feature_hash, "color": o.color}
                for o in self.objects.values()
            ]
        }


def feature_hash(class_name: str) -> str:
    """A stable 8-hex featureHash for a class name (what the default ontology uses)."""
    return hashlib.sha1(class_name.encode()).hexdigest()[:8]


def default_ontology(classes: tuple[str, ...]) -> Ontology:
    """One ontology object per model class, named after it."""
    objects = {}
    for i, c in enumerate(classes):
        if c not in _SKIP:
            objects[c] = OntologyObject(c, c, feature_hash(c), PALETTE[i % len(PALETTE)])
    return Ontology(objects)


def load_ontology(path: str | Path, classes: tuple[str, ...]) -> Ontology:
    """Read and validate an ontology JSON file against the model's classes."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SegflowError(f"--ontology {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise SegflowError(f"--ontology {path}: not readable JSON ({exc})") from None
    return parse_ontology(doc, classes, f"--ontology {path}")


def parse_ontology(doc: dict, classes: tuple[str, ...], where: str = "ontology") -> Ontology:
    """Validate an ontology document against the model's classes."""
    items = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise SegflowError(f"{where}: not an ontology JSON with an 'objects' list")
    by_lower = {c.lower(): c for c in classes}
    objects: dict[str, OntologyObject] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            raise SegflowError(f"{where}: object {i} has no 'name'")
        cls = item.get("class") or by_lower.get(str(item["name"]).lower())
        if cls not in classes:
            raise SegflowError(
                f"{where}: object {item['name']!r} (class {item.get('class', item['name'])!r}) maps to no model class "
                f"(model classes: {', '.join(c for c in classes if c not in _SKIP)})"
            )
        fh = item.get("featureHash") or item.get("featureNodeHash") or feature_hash(cls)
        color = item.get("color") or PALETTE[i % len(PALETTE)]
        objects[cls] = OntologyObject(cls, str(item["name"]), str(fh), str(color))
    return Ontology(objects)
