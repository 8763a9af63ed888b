using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// Finds, loads and vets a libfluxnative file. Stateless: <see cref="FluxNativeLibrary"/> keeps the
/// one library the process uses; tests call this directly to try arbitrary files without touching it.
/// </summary>
internal static unsafe class NativeLibraryLoader
{
    /// <summary>The platform's file name for the library.</summary>
    public static string FileName { get; } =
        OperatingSystem.IsWindows() ? "fluxnative.dll"
        : OperatingSystem.IsMacOS() ? "libfluxnative.dylib"
        : "libfluxnative.so";

    /// <summary>The NuGet runtime-identifier folder for this process, e.g. <c>runtimes/linux-x64/native</c>.</summary>
    public static string RuntimesFolder { get; } = Path.Combine("runtimes", RuntimeIdentifier(), "native");

    /// <summary>
    /// The candidates in probe order. An explicit path (configured, else from the environment) is the
    /// only candidate when given: asking for a file and silently getting another is worse than failing.
    /// </summary>
    public static IReadOnlyList<(string Candidate, ProbeLocation Location)> Candidates(
        string? configuredPath, string? environmentPath, string? assemblyDirectory, string baseDirectory)
    {
        if (!string.IsNullOrWhiteSpace(configuredPath))
        {
            return [(configuredPath, ProbeLocation.Configured)];
        }

        if (!string.IsNullOrWhiteSpace(environmentPath))
        {
            return [(Path.GetFullPath(environmentPath), ProbeLocation.EnvironmentVariable)];
        }

        var candidates = new List<(string, ProbeLocation)>();
        void Add(string path, ProbeLocation location)
        {
            if (!candidates.Exists(c => string.Equals(c.Item1, path, StringComparison.Ordinal)))
            {
                candidates.Add((path, location));
            }
        }

        if (!string.IsNullOrEmpty(assemblyDirectory))
        {
            Add(Path.Combine(assemblyDirectory, FileName), ProbeLocation.AssemblyDirectory);
        }

        Add(Path.Combine(baseDirectory, FileName), ProbeLocation.BaseDirectory);
        if (!string.IsNullOrEmpty(assemblyDirectory))
        {
            Add(Path.Combine(assemblyDirectory, RuntimesFolder, FileName), ProbeLocation.AssemblyRuntimesFolder);
        }

        Add(Path.Combine(baseDirectory, RuntimesFolder, FileName), ProbeLocation.BaseRuntimesFolder);
        Add(FileName, ProbeLocation.OperatingSystemSearch);
        return candidates;
    }

    /// <summary>
    /// Loads <paramref name="candidate"/> (a path, or a bare file name for the OS search) and checks
    /// that it is a libfluxnative with the ABI version this binding was built for. On success the
    /// caller owns <paramref name="handle"/>; on failure nothing stays loaded.
    /// </summary>
    public static NativeLibraryProbe TryLoad(string candidate, ProbeLocation location, out IntPtr handle)
    {
        handle = IntPtr.Zero;
        bool isPath = location != ProbeLocation.OperatingSystemSearch;
        if (isPath && !File.Exists(candidate))
        {
            return new NativeLibraryProbe(candidate, location, Loaded: false, Error: "no such file");
        }

        IntPtr loaded;
        try
        {
            loaded = NativeLibrary.Load(candidate);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            return new NativeLibraryProbe(candidate, location, Loaded: false, Error: LoaderError(e.Message));
        }

        // fx_abi_version is the one function every ABI version keeps; nothing else is called before it
        // has vouched for the rest.
        if (!NativeLibrary.TryGetExport(loaded, "fx_abi_version", out IntPtr abiVersionExport))
        {
            NativeLibrary.Free(loaded);
            return new NativeLibraryProbe(candidate, location, Loaded: false,
                Error: $"{candidate} is not a libfluxnative: it exports no fx_abi_version");
        }

        uint abiVersion = ((delegate* unmanaged[Cdecl]<uint>)abiVersionExport)();
        if (abiVersion != FluxNativeLibrary.AbiVersion)
        {
            NativeLibrary.Free(loaded);
            return new NativeLibraryProbe(candidate, location, Loaded: false,
                Error: $"libfluxnative at {candidate} has ABI version {abiVersion}, this FluxNative.Interop needs {FluxNativeLibrary.AbiVersion}",
                AbiVersion: abiVersion);
        }

        // The library's version must be this binding's: the packages, the assemblies and the library are built from
        // one CMake project(VERSION), and a library from another build would only work by accident.
        if (VersionMismatch(candidate, ReadVersion(loaded), FluxNativeLibrary.Version) is { } versionError)
        {
            NativeLibrary.Free(loaded);
            return new NativeLibraryProbe(candidate, location, Loaded: false, Error: versionError, AbiVersion: abiVersion);
        }

        handle = loaded;
        return new NativeLibraryProbe(candidate, location, Loaded: true, Error: null,
            AbiVersion: abiVersion, ResolvedPath: ReadLibraryPath(loaded));
    }

    /// <summary>
    /// Tries the candidates in order and stops at the first that loads. Throws
    /// <see cref="FluxNativeLoadException"/> listing every attempt when none does.
    /// </summary>
    public static (IntPtr Handle, IReadOnlyList<NativeLibraryProbe> Probes) LoadFirst(
        IReadOnlyList<(string Candidate, ProbeLocation Location)> candidates)
    {
        var probes = new List<NativeLibraryProbe>(candidates.Count);
        foreach ((string candidate, ProbeLocation location) in candidates)
        {
            NativeLibraryProbe probe = TryLoad(candidate, location, out IntPtr handle);
            probes.Add(probe);
            if (probe.Loaded)
            {
                return (handle, probes);
            }
        }

        throw LoadFailure(probes);
    }

    private static FluxNativeLoadException LoadFailure(IReadOnlyList<NativeLibraryProbe> probes)
    {
        // A library that was found but refused explains more than the places where none was found.
        NativeLibraryProbe? refused = probes.FirstOrDefault(p => p.AbiVersion is not null);
        if (probes.Count == 1)
        {
            return new FluxNativeLoadException(
                refused is null ? FluxStatus.NotFound : FluxStatus.Unsupported,
                $"Cannot load libfluxnative from {probes[0].Candidate} ({probes[0].Location}): {probes[0].Error}",
                probes);
        }

        string headline = refused is null
            ? "libfluxnative was not found."
            : refused.Error!;
        string tried = string.Join(Environment.NewLine, probes.Select(p => $"  {p.Candidate} ({p.Location}): {p.Error}"));
        return new FluxNativeLoadException(
            refused is null ? FluxStatus.NotFound : FluxStatus.Unsupported,
            $"{headline} Tried, in order:{Environment.NewLine}{tried}{Environment.NewLine}"
            + $"Build it with `dotnet build` (or CMake), or point {FluxNativeLibrary.PathEnvironmentVariable} or FluxNativeLibrary.Configure at it.",
            probes);
    }

    /// <summary>
    /// Why a library of version <paramref name="libraryVersion"/> (its <c>fx_version</c>) cannot serve a binding of
    /// version <paramref name="expected"/>, or null when it can. The versions compare as MAJOR.MINOR.PATCH: a
    /// package's pre-release or build suffix (<c>0.2.0-preview.1</c>, <c>+commit</c>) is not part of the library's.
    /// </summary>
    internal static string? VersionMismatch(string candidate, string? libraryVersion, string expected)
    {
        static string Core(string version) => version.Split('-', '+')[0].Trim();
        if (libraryVersion is not null && string.Equals(Core(libraryVersion), Core(expected), StringComparison.Ordinal))
        {
            return null;
        }

        return $"libfluxnative at {candidate} is version {libraryVersion ?? "(none reported)"}, this FluxNative.Interop is {expected}: "
            + "use the library that came with this package (or build both from one checkout)";
    }

    /// <summary>fx_version through a raw export, before the binding's declarations are bound to this handle.</summary>
    private static string? ReadVersion(IntPtr library)
    {
        if (!NativeLibrary.TryGetExport(library, "fx_version", out IntPtr export))
        {
            return null;
        }

        byte* text = ((delegate* unmanaged[Cdecl]<byte*>)export)();
        return text == null ? null : NativeStatus.Utf8(text);
    }

    /// <summary>fx_library_path through a raw export: the binding's declarations are not bound to this handle.</summary>
    private static string? ReadLibraryPath(IntPtr library)
    {
        if (!NativeLibrary.TryGetExport(library, "fx_library_path", out IntPtr export))
        {
            return null;
        }

        var libraryPath = (delegate* unmanaged[Cdecl]<byte*, nuint, nuint*, FluxStatus>)export;
        nuint needed = 0;
        FluxStatus status = libraryPath(null, 0, &needed);
        if (status is not (FluxStatus.Ok or FluxStatus.BufferTooSmall) || needed == 0 || needed > 64 * 1024)
        {
            return null;
        }

        byte* buffer = stackalloc byte[(int)needed];
        return libraryPath(buffer, needed, &needed) == FluxStatus.Ok ? NativeStatus.Utf8(buffer) : null;
    }

    /// <summary>
    /// The loader's own text (dlerror, GetLastError) from the runtime's message, on one line. The
    /// runtime wraps it in advice about strace and LD_DEBUG that repeats for every candidate.
    /// </summary>
    private static string LoaderError(string runtimeMessage)
    {
        const string Marker = "environment variable:";
        int marker = runtimeMessage.LastIndexOf(Marker, StringComparison.Ordinal);
        string text = marker >= 0 ? runtimeMessage[(marker + Marker.Length)..] : runtimeMessage;
        return string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    private static string RuntimeIdentifier()
    {
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        string arch = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => "x64",
            Architecture.Arm64 => "arm64",
            Architecture.X86 => "x86",
            Architecture.Arm => "arm",
            var other => other.ToString().ToLowerInvariant(),
        };
        return $"{os}-{arch}";
    }
}
