namespace FluxNative;

/// <summary>
/// A failure reported by the native library. <see cref="Code"/> says what kind of failure it is;
/// the message is the library's own, which names the file, tensor or argument at fault.
/// </summary>
public class FluxNativeException : Exception
{
    /// <summary>Creates an exception for a native status and its message.</summary>
    public FluxNativeException(FluxStatus code, string message)
        : base(message)
    {
        Code = code;
    }

    /// <summary>Creates an exception for a native status and its message, caused by another exception.</summary>
    public FluxNativeException(FluxStatus code, string message, Exception? innerException)
        : base(message, innerException)
    {
        Code = code;
    }

    /// <summary>The native status (<c>fx_status</c>) of the failed call.</summary>
    public FluxStatus Code { get; }
}

/// <summary>
/// The native library could not be loaded, or was refused (wrong ABI version). <see cref="Probes"/>
/// lists every place that was tried, with the operating system's loader error for each.
/// </summary>
public sealed class FluxNativeLoadException : FluxNativeException
{
    /// <summary>Creates a load failure from the probes that were tried.</summary>
    public FluxNativeLoadException(FluxStatus code, string message, IReadOnlyList<NativeLibraryProbe> probes)
        : base(code, message)
    {
        Probes = probes;
    }

    /// <summary>Every candidate that was tried, in probe order.</summary>
    public IReadOnlyList<NativeLibraryProbe> Probes { get; }
}
