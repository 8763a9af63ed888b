using System.Reflection;
using System.Runtime.InteropServices;

using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// Chooses and loads the native library (libfluxnative) for the whole process.
/// </summary>
/// <remarks>
/// <para>Probe order (the first file that loads <em>and</em> has ABI version <see cref="AbiVersion"/> wins):</para>
/// <list type="number">
/// <item>the path given to <see cref="Configure(string)"/>, else the path in the <c>FLUXNATIVE_LIBRARY</c>
/// environment variable; when either is given it is the only candidate;</item>
/// <item>next to the FluxNative.Interop assembly;</item>
/// <item>in <see cref="AppContext.BaseDirectory"/>;</item>
/// <item>in <c>runtimes/&lt;rid&gt;/native/</c> (e.g. <c>runtimes/linux-x64/native/</c>) under each of those two;</item>
/// <item>the operating system's search by file name.</item>
/// </list>
/// <para>A candidate is accepted only when its ABI version is <see cref="AbiVersion"/> and its version
/// (<c>fx_version</c>) is <see cref="Version"/>.</para>
/// <para>Nothing is loaded until the first native call, <see cref="EnsureLoaded"/> or <see cref="Diagnose"/>.
/// A failure throws <see cref="FluxNativeLoadException"/> listing every candidate with its loader error; it is
/// not remembered, so a later call (after <see cref="Configure(string)"/>, say) tries again.</para>
/// </remarks>
public static class FluxNativeLibrary
{
    /// <summary>The <c>FX_ABI_VERSION</c> of the <c>fluxnative.h</c> this binding mirrors.</summary>
    public const uint AbiVersion = 2;

    /// <summary>
    /// The version of this binding, of its package and of the native library it accepts ("MAJOR.MINOR.PATCH", from
    /// CMake's <c>project(FluxNative VERSION ...)</c>). A library whose <c>fx_version</c> differs is refused.
    /// </summary>
    public static string Version { get; } =
        typeof(FluxNativeLibrary).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "FluxNativeVersion")?.Value ?? "0.0.0";

    /// <summary>The environment variable that names the library file to load.</summary>
    public const string PathEnvironmentVariable = "FLUXNATIVE_LIBRARY";

    private static readonly Lock Gate = new();
    private static int resolverInstalled;
    private static string? configuredPath;
    private static IntPtr loadedHandle;
    private static IReadOnlyList<NativeLibraryProbe> loadProbes = [];

    /// <summary>Whether the native library has been loaded into this process.</summary>
    public static bool IsLoaded
    {
        get
        {
            lock (Gate)
            {
                return loadedHandle != IntPtr.Zero;
            }
        }
    }

    /// <summary>
    /// Uses the library at <paramref name="path"/> instead of probing. Must be called before the
    /// library is loaded; afterwards it throws, because a process cannot swap the library it uses.
    /// </summary>
    /// <exception cref="InvalidOperationException">The library is already loaded.</exception>
    public static void Configure(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        lock (Gate)
        {
            if (loadedHandle != IntPtr.Zero)
            {
                throw new InvalidOperationException(
                    $"FluxNativeLibrary.Configure(\"{path}\") came too late: libfluxnative is already loaded from {LoadedProbe()?.Candidate}. Configure it before the first FluxNative call.");
            }

            configuredPath = Path.GetFullPath(path);
        }
    }

    /// <summary>
    /// Loads the library now (if it is not loaded yet), so that a missing or mismatched library is
    /// reported at start-up rather than at the first real call.
    /// </summary>
    /// <exception cref="FluxNativeLoadException">No candidate could be loaded or accepted.</exception>
    public static void EnsureLoaded() => LoadedHandle();

    /// <summary>
    /// Loads the library if needed and reports what was tried, what was loaded and what it can do.
    /// Never throws for a library that cannot be loaded: the report says why.
    /// </summary>
    public static unsafe FluxNativeDiagnostics Diagnose()
    {
        try
        {
            EnsureLoaded();
        }
        catch (FluxNativeLoadException e)
        {
            return new FluxNativeDiagnostics { Probes = e.Probes, LoadError = e.Message };
        }

        FxBuildInfo info;
        NativeMethods.fx_build_info_init(&info);
        NativeStatus.ThrowIfFailed(NativeMethods.fx_get_build_info(&info));
        NativeLibraryProbe? loaded = LoadedProbe();
        return new FluxNativeDiagnostics
        {
            Probes = LoadProbes(),
            LoadedFrom = loaded?.Candidate,
            LibraryPath = NativeString.Read(0, static (_, buffer, capacity, needed) => NativeMethods.fx_library_path(buffer, capacity, needed)),
            Version = NativeStatus.Utf8(NativeMethods.fx_version()),
            AbiVersion = NativeMethods.fx_abi_version(),
            Backends = (FluxBackends)info.Backends,
            CpuFeatures = (CpuFeatures)info.CpuFeatures,
            MachineCpuFeatures = (CpuFeatures)info.CpuFeaturesMachine,
            CudaToolkitVersion = info.CudaToolkitVersion,
            CudaDriverVersion = info.CudaDriverVersion,
            CudaDeviceCount = info.CudaDeviceCount,
        };
    }

    /// <summary>Registers the resolver for the binding's declarations; see <see cref="NativeMethods"/>.</summary>
    internal static void InstallResolver()
    {
        if (Interlocked.Exchange(ref resolverInstalled, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(FluxNativeLibrary).Assembly, Resolve);
        }
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        libraryName == NativeMethods.LibraryName ? LoadedHandle() : IntPtr.Zero;

    private static IntPtr LoadedHandle()
    {
        lock (Gate)
        {
            if (loadedHandle != IntPtr.Zero)
            {
                return loadedHandle;
            }

            string? assemblyDirectory = Path.GetDirectoryName(typeof(FluxNativeLibrary).Assembly.Location);
            var candidates = NativeLibraryLoader.Candidates(
                configuredPath,
                Environment.GetEnvironmentVariable(PathEnvironmentVariable),
                string.IsNullOrEmpty(assemblyDirectory) ? null : assemblyDirectory,
                AppContext.BaseDirectory);
            (IntPtr handle, IReadOnlyList<NativeLibraryProbe> probes) = NativeLibraryLoader.LoadFirst(candidates);
            loadProbes = probes;
            loadedHandle = handle;
            return handle;
        }
    }

    private static IReadOnlyList<NativeLibraryProbe> LoadProbes()
    {
        lock (Gate)
        {
            return loadProbes;
        }
    }

    private static NativeLibraryProbe? LoadedProbe() => LoadProbes().LastOrDefault(p => p.Loaded);
}
