namespace FluxNative.Interop;

/// <summary>
/// Reads the C ABI's variable-length strings: functions of the shape
/// <c>(char* buffer, size_t capacity, size_t* needed)</c> that store the size they need (NUL included)
/// and return <c>FX_ERR_BUFFER_TOO_SMALL</c> when the buffer is too small.
/// </summary>
internal static unsafe class NativeString
{
    /// <summary>A string getter bound to whatever state it needs (a handle, for instance).</summary>
    public delegate FluxStatus Getter<TState>(TState state, byte* buffer, nuint capacity, nuint* needed);

    // Most answers (paths, small JSON documents) fit; larger ones cost one extra call.
    private const int StackBufferSize = 1024;

    public static string Read<TState>(TState state, Getter<TState> getter)
    {
        nuint needed = 0;
        byte* stackBuffer = stackalloc byte[StackBufferSize];
        FluxStatus status = getter(state, stackBuffer, StackBufferSize, &needed);
        if (status == FluxStatus.Ok)
        {
            return NativeStatus.Utf8(stackBuffer);
        }

        if (status != FluxStatus.BufferTooSmall)
        {
            NativeStatus.ThrowIfFailed(status);
        }

        // The value cannot change between the two calls for the getters of this ABI (immutable
        // handles, process-wide constants), but a retry loop costs nothing and never truncates.
        while (true)
        {
            byte[] heapBuffer = new byte[checked((int)needed)];
            fixed (byte* buffer = heapBuffer)
            {
                status = getter(state, buffer, (nuint)heapBuffer.Length, &needed);
                if (status == FluxStatus.Ok)
                {
                    return NativeStatus.Utf8(buffer);
                }
            }

            if (status != FluxStatus.BufferTooSmall)
            {
                NativeStatus.ThrowIfFailed(status);
            }
        }
    }
}
