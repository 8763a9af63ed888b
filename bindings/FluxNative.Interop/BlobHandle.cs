using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>Owns an <c>fx_blob*</c> (bytes the library allocated), released by <c>fx_blob_free</c>.</summary>
internal sealed class BlobHandle : SafeHandle
{
    /// <summary>Used by the LibraryImport generator for <c>out</c> parameters.</summary>
    public BlobHandle()
        : base(invalidHandleValue: IntPtr.Zero, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Copies the bytes into a managed array.</summary>
    public unsafe byte[] ToArray()
    {
        byte* data;
        nuint size;
        NativeStatus.ThrowIfFailed(NativeMethods.fx_blob_data(this, &data, &size));
        return new ReadOnlySpan<byte>(data, checked((int)size)).ToArray();
    }

    protected override bool ReleaseHandle()
    {
        NativeMethods.fx_blob_free(handle);
        return true;
    }
}
