using System.Diagnostics;
using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>Turns native statuses into exceptions. The one place that does so.</summary>
internal static unsafe class NativeStatus
{
    /// <summary>
    /// Throws <see cref="FluxNativeException"/> unless <paramref name="status"/> is <see cref="FluxStatus.Ok"/>.
    /// Call it directly on the value a native call returned: the message is thread-local and only
    /// describes this thread's most recent failure.
    /// </summary>
    [StackTraceHidden]
    public static void ThrowIfFailed(FluxStatus status)
    {
        if (status != FluxStatus.Ok)
        {
            throw new FluxNativeException(status, LastErrorMessage(status));
        }
    }

    /// <summary>This thread's last native error message, or the status name when the library gave none.</summary>
    public static string LastErrorMessage(FluxStatus status)
    {
        string message = Utf8(NativeMethods.fx_last_error());
        return message.Length > 0 ? message : $"{Utf8(NativeMethods.fx_status_name((int)status))} (no message)";
    }

    /// <summary>Copies a NUL-terminated UTF-8 string the library owns into a managed string.</summary>
    public static string Utf8(byte* text) => text == null ? string.Empty : Marshal.PtrToStringUTF8((nint)text) ?? string.Empty;
}
