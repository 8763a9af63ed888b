using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// Owns an <c>fx_text_model*</c>, released exactly once by <c>fx_text_model_free</c> (from Dispose or the
/// critical finalizer). Calls that take it hold a reference, so disposing during an encode on another
/// thread frees the model only after that encode returns.
/// </summary>
internal sealed class TextModelHandle : SafeHandle
{
    /// <summary>Used by the LibraryImport generator for <c>out</c> parameters.</summary>
    public TextModelHandle()
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.fx_text_model_free(handle);
        return true;
    }
}
