using System.Runtime.InteropServices;

namespace FluxNative;

/// <summary>
/// A flag in native memory that the library polls between blocks (<c>const volatile int32_t* cancel</c>),
/// set from a <see cref="CancellationToken"/>'s callback: a long forward or decode returns
/// <c>FX_ERR_CANCELLED</c> soon after the token fires, instead of running to its end.
/// </summary>
internal sealed unsafe class NativeCancellation : IDisposable
{
    private readonly CancellationTokenRegistration registration;
    private int* flag;

    public NativeCancellation(CancellationToken token)
    {
        flag = (int*)NativeMemory.AllocZeroed(sizeof(int));
        if (token.CanBeCanceled)
        {
            // The callback writes through a copy of the address; Dispose unregisters (waiting for a
            // running callback) before the memory is freed.
            nint address = (nint)flag;
            registration = token.UnsafeRegister(static state => Volatile.Write(ref *(int*)(nint)state!, 1), address);
        }
    }

    /// <summary>The address to pass as <c>cancel</c>; valid until <see cref="Dispose"/>.</summary>
    public int* Pointer => flag;

    public void Dispose()
    {
        registration.Dispose();
        if (flag != null)
        {
            NativeMemory.Free(flag);
            flag = null;
        }
    }

    /// <summary>
    /// Throws for a failed native call made with this flag: <c>FX_ERR_CANCELLED</c> becomes the
    /// <see cref="OperationCanceledException"/> of <paramref name="token"/>, anything else a
    /// <see cref="FluxNativeException"/>. Call it right after the call, on the same thread.
    /// </summary>
    public static void ThrowIfFailed(FluxStatus status, CancellationToken token)
    {
        if (status == FluxStatus.Cancelled)
        {
            throw new OperationCanceledException("Cancelled inside the native library.", token);
        }

        Interop.NativeStatus.ThrowIfFailed(status);
    }
}
