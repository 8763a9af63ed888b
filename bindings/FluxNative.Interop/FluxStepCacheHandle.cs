using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// Owns an <c>fx_flux_step_cache*</c> (one sample's step-caching state), released exactly once by
/// <c>fx_flux_step_cache_free</c>. A forward that is given the raw pointer must hold a reference for its duration.
/// </summary>
internal sealed class FluxStepCacheHandle : SafeHandle
{
    /// <summary>Used by the LibraryImport generator for <c>out</c> parameters.</summary>
    public FluxStepCacheHandle()
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMethods.fx_flux_step_cache_free(handle);
        return true;
    }
}
