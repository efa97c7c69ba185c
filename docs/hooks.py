"""MkDocs hook: the pages kept outside docs/ go into the site too.

The README is the site's home page and benchmarks/README.md (the speed page) sits
beside the scripts it describes, so that GitHub shows each where a reader looks for
it. Their links, like the docs pages' links to them (`../README.md`,
`../benchmarks/README.md`), are written for where the files are in the repository.
MkDocs knows only the files under docs_dir, so this adds those files to the site
(`OUTSIDE`) and rewrites every relative link of every page from its place in the
repository to its place in the site. A link to any other file outside docs/ is left
as it is, for `mkdocs build --strict` to report.
"""

import os
import posixpath
import re

from mkdocs.structure.files import File

# A file of the repository outside docs/ -> where it sits in the site.
OUTSIDE = {
    "README.md": "index.md",
    "benchmarks/README.md": "benchmarks/README.md",
    "benchmarks/results/cpu.png": "benchmarks/results/cpu.png",
}
# The target of an inline link or image, [text](target): no spaces, no parentheses.
LINK = re.compile(r"(\]\()([^()\s]+)(\))")
FENCE = re.compile(r"(?ms)(^```.*?^```)")


def on_files(files, config):
    root = os.path.dirname(config.config_file_path)
    for path, src_uri in OUTSIDE.items():
        files.append(File.generated(config, src_uri, abs_src_path=os.path.join(root, path)))
    return files


def _repository_path(src_uri):
    """Where the site's file `src_uri` is in the repository."""
    outside = {uri: path for path, uri in OUTSIDE.items()}
    return outside.get(src_uri, posixpath.join("docs", src_uri))


def _site_uri(path):
    """Where the repository's file `path` is in the site, or None (not in it)."""
    if path in OUTSIDE:
        return OUTSIDE[path]
    return path[len("docs/") :] if path.startswith("docs/") else None


def on_page_markdown(markdown, page, config, files):
    here = posixpath.dirname(_repository_path(page.file.src_uri))
    there = posixpath.dirname(page.file.src_uri) or "."

    def rewritten(match):
        target, _, anchor = match.group(2).partition("#")
        if not target or ":" in target or target.startswith("/"):  # An anchor, a URL, absolute.
            return match.group(0)
        uri = _site_uri(posixpath.normpath(posixpath.join(here, target)))
        if uri is None:
            return match.group(0)
        link = posixpath.relpath(uri, there) + ("#" + anchor if anchor else "")
        return match.group(1) + link + match.group(3)

    # Fenced code blocks (the odd parts) hold no links.
    parts = FENCE.split(markdown)
    return "".join(part if i % 2 else LINK.sub(rewritten, part) for i, part in enumerate(parts))
