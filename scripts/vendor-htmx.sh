#!/usr/bin/env bash
# The portal's one script library, htmx, is vendored: committed under services/portal/static/ and served by the
# portal itself (nothing is loaded from a CDN at run time, and there is no build step). This script is how the file
# was taken from its npm package, and how to take a newer one: change VERSION and SHA256 (of dist/htmx.min.js).
set -euo pipefail
VERSION=2.0.11
SHA256=d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717
DEST="$(cd "$(dirname "$0")/.." && pwd)/services/portal/static"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$VERSION" >/dev/null && tar xzf htmx.org-"$VERSION".tgz)
echo "$SHA256  $work/package/dist/htmx.min.js" | sha256sum --check --quiet
cp "$work/package/dist/htmx.min.js" "$DEST/htmx.min.js"
cp "$work/package/LICENSE" "$DEST/htmx.LICENSE"
echo "htmx $VERSION -> $DEST/htmx.min.js"
