#!/bin/bash
# Build dist/: terok-install.pyz, terok-panic, the .deb and the .rpm.
# Two runs from one commit give byte-identical files: every timestamp is
# the date of the top debian/changelog entry.
#
#   ./build.sh --install   also apt-get install the .deb (as root)
#   TEROK_BUILD_VERSION=V  build version V instead (patches copies only,
#                          for upgrade tests)
#   TEROK_DIST_DIR=DIR     put the artefacts in DIR instead of dist/
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$(readlink -f "$0")")"

TOP=$PWD
VENV=$TOP/build/venv
DIST=$(realpath -m "${TEROK_DIST_DIR:-dist}")
MAX_PYZ_BYTES=$((1536 * 1024))
APT_TOOLS=(python3-venv dpkg-dev debhelper rpm)

die() { echo "build.sh: $*" >&2; exit 1; }

have_tools() {
    /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || return 1
    local tool
    for tool in dpkg-buildpackage dpkg-parsechangelog dh rpmbuild; do
        command -v "$tool" >/dev/null || return 1
    done
}

ensure_tools() {
    have_tools && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y --no-install-recommends "${APT_TOOLS[@]}" >&2 ||
            { apt-get update >&2 && apt-get install -y \
                  --no-install-recommends "${APT_TOOLS[@]}" >&2; }
    fi
    have_tools ||
        die "missing build tools; run: apt-get install ${APT_TOOLS[*]}"
}

read_version() {
    local init=terok_install/__init__.py py deb
    [ -f "$init" ] || die "$init is missing"
    py=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$init")
    deb=$(dpkg-parsechangelog -l debian/changelog -SVersion)
    [ -n "$py" ] || die "no __version__ = \"...\" line in $init"
    [ "$py" = "$deb" ] || die "$init has version $py but debian/changelog" \
        "has $deb; add a changelog entry for $py"
    VERSION=${TEROK_BUILD_VERSION:-$py}
    # Valid for Python, Debian and rpm alike.
    [[ $VERSION =~ ^[0-9][0-9a-z.]*$ ]] || die "bad version '$VERSION'"
    RELEASE=$(sed -n 's/^Release:[[:space:]]*//p' rpm/terok-sandbox.spec)
    SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l debian/changelog -STimestamp)
    export SOURCE_DATE_EPOCH
}

make_venv() {
    local stamp=$VENV/build-requirements.txt
    cmp -s packaging/build-requirements.txt "$stamp" &&
        "$VENV/bin/python" -c '' 2>/dev/null && return
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r packaging/build-requirements.txt
    cp packaging/build-requirements.txt "$stamp"
}

# Copies of the sources, with the version patched in if asked.
stage_sources() {
    mkdir -p "$WORK/src"
    cp -r setup.cfg pyproject.toml terok_install "$WORK/src/"
    [ ! -f README.md ] || cp README.md "$WORK/src/"
    find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
    sed -i "s/^__version__ = .*/__version__ = \"$VERSION\"/" \
        "$WORK/src/terok_install/__init__.py"
    sed "1s/([^)]*)/($VERSION)/" debian/changelog >"$WORK/changelog"
}

build_site() {
    local site=$WORK/site
    local pip=("$VENV/bin/pip" install -q --no-compile --no-deps
               --target "$site")
    "${pip[@]}" --only-binary :all: -r packaging/requirements.txt
    "${pip[@]}" --no-build-isolation "$WORK/src"
    # Compiled speedups (each library falls back to pure Python), their
    # sources and stubs, and what depends on the build folder: console
    # scripts naming the venv's python, direct_url.json, and the RECORDs
    # that list both (and the speedups). Then pip's bookkeeping and the
    # type checkers' markers, which nothing reads at run time and every
    # first run would unpack: each dist-info keeps METADATA and licences.
    rm -rf "$site/bin"
    find "$site" \( -name __pycache__ -o -name '*.libs' \) -prune \
        -exec rm -rf {} +
    find "$site" -type f \( -name '*.so' -o -name '*.so.*' -o -name '*.c' \
        -o -name '*.pyi' -o -name py.typed \) -delete
    find "$site" -path '*.dist-info/*' -type f \( -name direct_url.json \
        -o -name RECORD -o -name INSTALLER -o -name REQUESTED \
        -o -name WHEEL -o -name top_level.txt -o -name entry_points.txt \) \
        -delete
    /usr/bin/python3 packaging/pack_deps.py "$WORK/src" "$site"
}

check_pyz() {
    local size
    size=$(stat -c %s "$1")
    [ "$size" -le "$MAX_PYZ_BYTES" ] ||
        die "$1 is $size bytes, over the limit of $MAX_PYZ_BYTES"
    /usr/bin/python3 - "$1" <<'EOF'
import io, sys, zipfile
def compiled_objects(archive, where=""):
    for name in archive.namelist():
        data = archive.read(name)
        if data[:4] == b"\x7fELF" or name.endswith(".so"):
            yield where + name
        elif name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                yield from compiled_objects(inner, where + name + "/")
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = list(compiled_objects(z))
if bad:
    sys.exit("build.sh: compiled objects in the zipapp: " + " ".join(bad))
EOF
    local said
    said=$(SHIV_ROOT=$WORK/shiv-root /usr/bin/python3 "$1" --version)
    [ "$said" = "terok-install $VERSION" ] ||
        die "$1 --version said '$said', not 'terok-install $VERSION'"
}

build_pyz() {
    "$VENV/bin/shiv" --site-packages "$WORK/site" --reproducible \
        --python /usr/bin/python3 --entry-point terok_install.cli:main \
        --preamble packaging/prune_cache.py \
        --output-file "$OUT/terok-install.pyz" >/dev/null
    /usr/bin/python3 packaging/add_bytecode.py "$WORK/src" \
        "$OUT/terok-install.pyz"
    check_pyz "$OUT/terok-install.pyz"
}

build_panic() {
    /usr/bin/python3 packaging/mkpanic.py "$WORK/src" "$OUT/terok-panic"
    /usr/bin/python3 -I -S "$OUT/terok-panic" --help >/dev/null &&
        "$OUT/terok-panic" --help >/dev/null ||
        die "$OUT/terok-panic --help failed"
}

# dpkg-buildpackage writes into the parent folder, so build in a copy.
build_deb() {
    local tree=$WORK/deb/terok-sandbox-$VERSION
    mkdir -p "$tree/prebuilt" "$tree/packaging"
    cp -r debian man "$tree/"
    cp "$WORK/changelog" "$tree/debian/changelog"
    cp packaging/terok-install.in "$tree/packaging/"
    cp "$OUT/terok-install.pyz" "$OUT/terok-panic" "$tree/prebuilt/"
    # -d: dpkg would insist on build-essential, but nothing is compiled.
    (cd "$tree" && dpkg-buildpackage -b -us -uc -d) >"$WORK/deb.log" 2>&1 ||
        { tail -n 30 "$WORK/deb.log" >&2; die "dpkg-buildpackage failed"; }
    cp "$WORK/deb/terok-sandbox_${VERSION}_all.deb" "$OUT/"
}

build_rpm() {
    local top=$WORK/rpm spec=$WORK/rpm/SPECS/terok-sandbox.spec
    mkdir -p "$top/SOURCES" "$top/SPECS"
    cp "$OUT/terok-install.pyz" "$OUT/terok-panic" man/terok-install.8 \
        man/terok-panic.1 packaging/terok-install.in debian/copyright \
        "$top/SOURCES/"
    { cat rpm/terok-sandbox.spec
      dpkg-parsechangelog -l "$WORK/changelog" --all --format rfc822 |
          /usr/bin/python3 packaging/rpm_changelog.py "$RELEASE"; } >"$spec"
    # The last define: Debian's brp-compress needs bash (read -d) but
    # says #!/bin/sh, so man pages would stay uncompressed.
    rpmbuild -bb --quiet --define "_topdir $top" \
        --define "terok_version $VERSION" \
        --define "packager $(dpkg-parsechangelog -l debian/changelog \
                             -SMaintainer)" \
        --define "_buildhost reproducible" \
        --define "use_source_date_epoch_as_buildtime 1" \
        --define "clamp_mtime_to_source_date_epoch 1" \
        --define "__brp_compress bash %{_rpmconfigdir}/brp-compress /usr" \
        "$spec" >"$WORK/rpm.log" 2>&1 ||
        { tail -n 30 "$WORK/rpm.log" >&2; die "rpmbuild failed"; }
    cp "$top/RPMS/noarch/terok-sandbox-$VERSION-$RELEASE.noarch.rpm" \
        rpm/terok-sandbox.rpmlintrc "$OUT/"
}

publish() {
    mkdir -p "$DIST"
    rm -f "$DIST"/terok-install.pyz "$DIST"/terok-panic \
        "$DIST"/terok-sandbox_*_all.deb "$DIST"/terok-sandbox-*.noarch.rpm \
        "$DIST"/terok-sandbox.rpmlintrc
    cp "$OUT"/* "$DIST/"
    (cd "$DIST" && sha256sum -- *)
}

INSTALL=no
case "${1:-}" in
    --install) INSTALL=yes ;;
    "") ;;
    *) die "usage: ./build.sh [--install]" ;;
esac
[ "$INSTALL" = no ] || [ "$(id -u)" = 0 ] || die "--install needs root"

ensure_tools
read_version
mkdir -p build
# One build at a time per checkout: they share build/venv and build/work-*.
exec 9>build/.lock
flock 9
WORK=$TOP/build/work-$VERSION
OUT=$WORK/out
rm -rf "$WORK"
mkdir -p "$OUT"
make_venv
stage_sources
build_site
build_pyz
build_panic
build_deb
build_rpm
publish
if [ "$INSTALL" = yes ]; then
    apt-get install -y "$DIST/terok-sandbox_${VERSION}_all.deb"
fi
