using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// Owns an <c>fx_checkpoint*</c>. Released exactly once by <c>fx_checkpoint_close</c>, from
/// <see cref="SafeHandle.Dispose()"/> or, if the owner forgot, from the critical finalizer. Every
/// P/Invoke that takes it holds a reference for the duration of the call, so a concurrent Dispose
/// cannot close the checkpoint under a running read (which the C ABI forbids).
/// </summary>
internal sealed class CheckpointHandle : SafeHandle
{
    /// <summary>Used by the LibraryImport generator for <c>out</c> parameters.</summary>
    public CheckpointHandle()
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.fx_checkpoint_close(handle);
        return true;
    }
}
