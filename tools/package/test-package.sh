#!/usr/bin/env bash
# The NuGet packages as a stranger uses them (issue 18 item 2):
#   1. `dotnet pack` the packable projects into a fresh local folder, and check each package's layout;
#   2. a fresh console project in a temp folder outside the repository, whose nuget.config takes the FluxNative
#      packages from that folder only (package source mapping; every other package from the machine's usual sources)
#      and a packages folder of its own (nothing cached from an earlier run can stand in);
#   3. `dotnet add package FluxNative` (and FluxNative.Hosting), a demo-sized generation from a prompt (the packaged
#      tokenizers, libfluxnative.so from runtimes/linux-x64/native), and the PNG checked: its size, that it is not
#      flat, that it equals the raw pixels the API returned;
#   4. the flux tool installed from the same folder: its version, and `flux generate --demo`.
# Usage: tools/package/test-package.sh [--no-build] [extra dotnet pack arguments, e.g. -p:FluxNativeSkipBuild=true
#        -p:FluxNativeLibrary=/path/libfluxnative.so]. Prints one line per step and, last,
#        "package test: 1 passed, 0 failed" or the step that failed and why. KEEP=1 keeps the temp folder.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
config=${CONFIGURATION:-Release}
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/fluxnative-package-test-XXXXXX")
step="start"
log="$work/step.log"

finish() {
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "package test FAILED at step '$step' (exit $rc) after $(( $(date +%s) - started )) s; the step's output:" >&2
    tail -n 40 "$log" >&2 2>/dev/null || true
    echo "package test: 0 passed, 1 failed"
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap finish EXIT

# Runs a step with its output in $log (shown only when it fails) and says how long it took.
run() {
  step=$1; shift
  local t0; t0=$(date +%s)
  ( "$@" ) >"$log" 2>&1   # a subshell: a step's cd stays in it
  echo "== $step ($(( $(date +%s) - t0 )) s)"
}
fail() { echo "$*" >>"$log"; return 1; }

version=$(sed -n 's/^project(FluxNative VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
[ -n "$version" ] || { step="read the version"; fail "no project(FluxNative VERSION ...) in CMakeLists.txt"; }
feed="$work/feed"

# ---- 1. pack --------------------------------------------------------------------------------------------------
run "pack $version into $feed" dotnet pack "$repo/FluxNative.sln" -c "$config" -nologo -v:minimal "-p:PackageOutputPath=$feed/" "$@"

check_layout() {
  local package=$1; shift
  local listing; listing=$(unzip -Z1 "$feed/$package.$version.nupkg") || fail "no $package.$version.nupkg in $feed: $(ls "$feed")"
  for file in "$@"; do
    grep -qxF "$file" <<<"$listing" || fail "$package.$version.nupkg lacks $file; it has: $(tr '\n' ' ' <<<"$listing")"
  done
  unzip -Z1 "$feed/$package.$version.snupkg" | grep '\.pdb$' >/dev/null || fail "$package.$version.snupkg has no symbols"
}
check_nuspec() {
  local package=$1 pattern=$2
  unzip -p "$feed/$package.$version.nupkg" "$package.nuspec" | grep -F -- "$pattern" >/dev/null || fail "$package.nuspec lacks $pattern"
}
layout() {
  check_layout FluxNative.Interop lib/net10.0/FluxNative.Interop.dll lib/net10.0/FluxNative.Interop.xml \
    runtimes/linux-x64/native/libfluxnative.so README.md THIRD-PARTY-NOTICES.txt
  check_layout FluxNative lib/net10.0/FluxNative.dll lib/net10.0/FluxNative.xml buildTransitive/FluxNative.targets \
    tokenizers/clip/vocab.json tokenizers/clip/merges.txt tokenizers/t5/spiece.model tokenizers/t5/tokenizer.json README.md
  check_layout FluxNative.Hosting lib/net10.0/FluxNative.Hosting.dll lib/net10.0/FluxNative.Hosting.xml README.md
  check_layout FluxNative.Cli tools/net10.0/any/flux.dll tools/net10.0/any/libfluxnative.so tools/net10.0/any/DotnetToolSettings.xml \
    tools/net10.0/any/tokenizers/clip/vocab.json
  # FluxNative takes the interop of its own version; every package says where its source is (SourceLink's commit).
  check_nuspec FluxNative "<dependency id=\"FluxNative.Interop\" version=\"$version\""
  check_nuspec FluxNative.Hosting "<dependency id=\"FluxNative\" version=\"$version\""
  for package in FluxNative FluxNative.Interop FluxNative.Hosting FluxNative.Cli; do
    check_nuspec "$package" '<repository type="git"'
    check_nuspec "$package" '<readme>README.md</readme>'
    check_nuspec "$package" '<license type="expression">MIT</license>'
  done
}
run "package layout" layout

# ---- 2. a stranger's project ----------------------------------------------------------------------------------
app="$work/app"
mkdir -p "$app"
new_project() {
  cd "$app"
  # The machine's own sources serve everything but FluxNative*, which comes from $feed only.
  mapfile -t sources < <(dotnet nuget list source | sed -n 's/^ *[0-9][0-9]*\. *\(.*\) \[Enabled\]$/\1/p')
  {
    echo '<?xml version="1.0" encoding="utf-8"?>'
    echo '<configuration>'
    echo "  <config><add key=\"globalPackagesFolder\" value=\"$work/packages\" /></config>"
    echo "  <packageSources><add key=\"fluxnative-local\" value=\"$feed\" /></packageSources>"
    echo '  <packageSourceMapping>'
    echo '    <packageSource key="fluxnative-local"><package pattern="FluxNative" /><package pattern="FluxNative.*" /></packageSource>'
    for source in "${sources[@]}"; do
      echo "    <packageSource key=\"$source\"><package pattern=\"*\" /></packageSource>"
    done
    echo '  </packageSourceMapping>'
    echo '</configuration>'
  } >nuget.config
  dotnet new console -n StrangerApp -o . --no-restore --force
  dotnet add package FluxNative --version "$version"
  dotnet add package FluxNative.Hosting --version "$version"
  source=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["source"])' "$work/packages/fluxnative/$version/.nupkg.metadata")
  [ "$source" = "$feed" ] || fail "FluxNative was restored from $source, not from $feed"
}
run "new console project + dotnet add package FluxNative" new_project

cat >"$app/Program.cs" <<'EOF'
// A stranger's program: the packaged API, native library and tokenizers, nothing from the repository.
using FluxNative;
using FluxNative.Hosting;

FluxNativeDiagnostics library = FluxNativeLibrary.Diagnose();
if (!library.IsLoaded)
{
    Console.Error.WriteLine(library.LoadError);
    return 2;
}

Console.WriteLine($"library {library.Version} from {library.LibraryPath}; tokenizers in {FluxTokenizerFiles.Directory}");
// The demo models through the Hosting package's options: both packages load.
FluxPipelineSources sources = new FluxPipelineHostOptions { Demo = true, DemoDirectory = args[0] }.ToSources();
var parts = new List<string>();
await using FluxPipeline pipeline = await FluxPipeline.LoadAsync(sources, DemoModels.Options, new Reporter<FluxLoadProgress>(p => parts.Add($"{p.Component}:{p.Done}")));
var previews = 0;
GenerationResult result = await pipeline.GenerateAsync(
    new GenerationRequest { Prompt = "a red fox in the snow", Width = 128, Height = 96, Steps = 4, Seed = 42, PreviewEvery = 2 },
    new Reporter<GenerationProgress>(p => previews += p.Previews?.Count ?? 0));
GeneratedImage image = result.Images[0];
File.WriteAllBytes(args[1], image.Bytes);
File.WriteAllBytes(args[1] + ".rgb", image.Rgb.ToArray());
Console.WriteLine($"image {image.Width}x{image.Height}, {image.Bytes.Length} bytes, {result.Timings.StepsPerSecond:F1} it/s; load reports {string.Join(' ', parts)}; previews {previews}");
return parts.Count == 8 && previews == 2 && image.Rgb.Length == 3 * image.Width * image.Height ? 0 : 1;

internal sealed class Reporter<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
EOF

run "build the stranger's project" dotnet build "$app" -c Release -nologo -v:minimal
out="$app/bin/Release/net10.0"
files() {
  for file in runtimes/linux-x64/native/libfluxnative.so tokenizers/clip/vocab.json tokenizers/t5/spiece.model FluxNative.Interop.dll; do
    [ -f "$out/$file" ] || fail "the build output lacks $file (NuGet's runtime assets or the buildTransitive copy failed)"
  done
}
run "the build output has the native library and the tokenizers" files

generate() {
  dotnet "$out/StrangerApp.dll" "$work/models" "$work/fox.png"
  python3 - "$work/fox.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
assert (width, height, depth, colour) == (128, 96, 8, 2), f"PNG is {width}x{height}, depth {depth}, colour type {colour}; wanted 128x96 8-bit RGB"
chunks, i = b"", 8
while i < len(data):
    length, kind = struct.unpack(">I4s", data[i:i + 8])
    if kind == b"IDAT":
        chunks += data[i + 8:i + 8 + length]
    i += 12 + length
raw = zlib.decompress(chunks)
stride = 1 + 3 * width
rows = [raw[r * stride:(r + 1) * stride] for r in range(height)]
# Undo the PNG filters to compare the pixels with the raw RGB the API returned.
pixels, previous = bytearray(), bytearray(3 * width)
for row in rows:
    kind, line, out = row[0], row[1:], bytearray(3 * width)
    for x in range(3 * width):
        a = out[x - 3] if x >= 3 else 0
        b = previous[x]
        c = previous[x - 3] if x >= 3 else 0
        p = a + b - c
        pred = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else (b if abs(p - b) <= abs(p - c) else c)
        out[x] = (line[x] + [0, a, b, (a + b) // 2, pred][kind]) & 255
    pixels += out
    previous = out
assert bytes(pixels) == open(sys.argv[1] + ".rgb", "rb").read(), "the PNG's pixels differ from GeneratedImage.Rgb"
assert len(set(pixels)) > 16, "the image is (nearly) flat"
print(f"PNG 128x96 checked: {len(set(pixels))} distinct values, pixels equal to GeneratedImage.Rgb")
PY
}
run "generate from a prompt with the packages and check the PNG" generate
sed -n '1,3p' "$log"

# ---- 4. the tool ------------------------------------------------------------------------------------------------
tool() {
  cd "$app"
  dotnet tool install FluxNative.Cli --version "$version" --tool-path "$work/tool"
  "$work/tool/flux" --version | grep "^$version " >/dev/null || fail "flux --version: $("$work/tool/flux" --version)"
  "$work/tool/flux" generate --demo "a lighthouse" --width 64 --height 64 --steps 2 --seed 1 --progress none -o "$work/tool.png"
  [ -s "$work/tool.png" ] || fail "flux generate wrote nothing"
}
run "dotnet tool install FluxNative.Cli; flux --version; flux generate --demo" tool

echo "package test: FluxNative $version packed, added by a stranger's project and the tool, in $(( $(date +%s) - started )) s"
echo "package test: 1 passed, 0 failed"
