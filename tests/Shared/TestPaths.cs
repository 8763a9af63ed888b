namespace FluxNative.Testing;

/// <summary>Paths in the repository the tests run from (found by walking up to FluxNative.sln).</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Header => Path.Combine(Root, "native", "include", "fluxnative.h");

    /// <summary>The CMake fixture whose fx_abi_version returns FX_ABI_VERSION + 1000.</summary>
    public static string AbiMismatchLibrary => Path.Combine(Root, "build", "native", "lib", "libfluxnative_abi_mismatch.so");

    private static string FindRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "FluxNative.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"No FluxNative.sln above {AppContext.BaseDirectory}.");
    }
}

/// <summary>A fresh folder under the system temp folder, deleted with everything in it on Dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = Directory.CreateTempSubdirectory("fluxnative-tests-").FullName;
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is not worth failing a test for.
        }
    }
}
