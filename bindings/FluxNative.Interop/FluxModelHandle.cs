using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// Owns an <c>fx_flux_model*</c>. Released exactly once by <c>fx_flux_model_free</c>, from
/// <see cref="SafeHandle.Dispose()"/> or, if the owner forgot, from the critical finalizer. Every
/// P/Invoke that takes it holds a reference for the duration of the call, so disposing the model
/// while a forward pass runs on another thread frees it only after that forward returns.
/// </summary>
/// <remarks>
/// The native model keeps its own reference to the checkpoint's mapped data, so this handle does not
/// need to keep a <see cref="CheckpointHandle"/> alive.
/// </remarks>
internal sealed class FluxModelHandle : SafeHandle
{
    /// <summary>Used by the LibraryImport generator for <c>out</c> parameters.</summary>
    public FluxModelHandle()
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.fx_flux_model_free(handle);
        return true;
    }
}
