"""MkDocs hook: the site's home page is README.md itself, so the two never drift apart.

README links its pages as ``docs/<page>.md`` (right on a repository host); inside the site the
same pages sit at ``<page>.md``, so those links are rewritten on the way in. Links to files
outside ``docs/`` are left as they are and fail the strict build, as a broken link should.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files


def on_files(files: Files, config) -> Files:
    readme = Path(config["config_file_path"]).parent / "README.md"
    text = readme.read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=text))
    return files
