namespace FluxNative;

/// <summary>Where a candidate library file came from, in probe order.</summary>
public enum ProbeLocation
{
    /// <summary>The path given to <see cref="FluxNativeLibrary.Configure(string)"/>.</summary>
    Configured,

    /// <summary>The path in the <c>FLUXNATIVE_LIBRARY</c> environment variable.</summary>
    EnvironmentVariable,

    /// <summary>Next to the FluxNative.Interop assembly.</summary>
    AssemblyDirectory,

    /// <summary>In <see cref="AppContext.BaseDirectory"/>.</summary>
    BaseDirectory,

    /// <summary>In <c>runtimes/&lt;rid&gt;/native/</c> next to the FluxNative.Interop assembly.</summary>
    AssemblyRuntimesFolder,

    /// <summary>In <c>runtimes/&lt;rid&gt;/native/</c> under <see cref="AppContext.BaseDirectory"/>.</summary>
    BaseRuntimesFolder,

    /// <summary>The operating system's own search by file name (LD_LIBRARY_PATH, the loader cache, ...).</summary>
    OperatingSystemSearch,
}

/// <summary>One attempt to load the native library.</summary>
/// <param name="Candidate">The path tried, or the bare file name for the operating system search.</param>
/// <param name="Location">Which probe step produced the candidate.</param>
/// <param name="Loaded">Whether this candidate was loaded and accepted.</param>
/// <param name="Error">Why it was not: the loader's error, or the ABI mismatch.</param>
/// <param name="AbiVersion">The library's <c>fx_abi_version()</c>, when it could be loaded at all.</param>
/// <param name="ResolvedPath">The file the loader actually opened (<c>fx_library_path</c>), when loaded.</param>
public sealed record NativeLibraryProbe(
    string Candidate,
    ProbeLocation Location,
    bool Loaded,
    string? Error,
    uint? AbiVersion = null,
    string? ResolvedPath = null);
