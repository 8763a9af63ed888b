using System.Text.RegularExpressions;
using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>What the NuGet packages rely on: one version everywhere, the tokenizer files found, no console output from the library.</summary>
public partial class PackagingTests
{
    [Fact]
    public void The_assemblies_the_package_and_the_native_library_share_the_CMake_project_version()
    {
        string cmake = File.ReadAllText(Path.Combine(RepoPaths.Root, "CMakeLists.txt"));
        string version = ProjectVersion().Match(cmake).Groups[1].Value;

        Assert.Equal(version, FluxNativeLibrary.Version);
        Assert.Equal(version, typeof(FluxPipeline).Assembly.GetName().Version!.ToString(3));
        Assert.Equal(version, FluxNativeLibrary.Diagnose().Version);   // the library refuses to load otherwise
    }

    [Fact]
    public void The_tokenizer_files_are_found_beside_the_application()
    {
        Assert.True(File.Exists(Path.Combine(FluxTokenizerFiles.Clip, "vocab.json")), FluxTokenizerFiles.Clip);
        Assert.True(File.Exists(Path.Combine(FluxTokenizerFiles.T5, "spiece.model")), FluxTokenizerFiles.T5);
        Assert.Equal(FluxTokenizerFiles.Directory, DemoModels.TokenizerDirectory);
    }

    [Fact]
    public void The_tokenizer_files_are_looked_for_in_the_package_folder_too()
    {
        // In a NuGet package the assembly is in lib/net10.0/ and the files in tokenizers/ at the package root.
        string assemblyDirectory = Path.GetDirectoryName(typeof(FluxTokenizerFiles).Assembly.Location)!;
        Assert.Contains(Path.GetFullPath(Path.Combine(assemblyDirectory, "..", "..", "tokenizers")), FluxTokenizerFiles.Candidates());
    }

    [Fact]
    public void The_library_writes_nothing_to_the_console()
    {
        // A host owns its console: the library reports through ILogger, IProgress and exceptions only.
        string[] roots = [Path.Combine(RepoPaths.Root, "src", "FluxNative"), Path.Combine(RepoPaths.Root, "bindings", "FluxNative.Interop"),
            Path.Combine(RepoPaths.Root, "src", "FluxNative.Hosting")];
        string[] offenders = [.. roots.SelectMany(r => Directory.EnumerateFiles(r, "*.cs", SearchOption.AllDirectories))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(x => ConsoleUse().IsMatch(x.line) && !x.line.TrimStart().StartsWith("///", StringComparison.Ordinal))
            .Select(x => $"{Path.GetRelativePath(RepoPaths.Root, x.f)}:{x.i + 1}: {x.line.Trim()}")];

        Assert.Empty(offenders);
    }

    [GeneratedRegex(@"project\(FluxNative VERSION ([0-9]+\.[0-9]+\.[0-9]+)")]
    private static partial Regex ProjectVersion();

    [GeneratedRegex(@"\bConsole\s*\.|Debug\.Write|Trace\.Write")]
    private static partial Regex ConsoleUse();
}
