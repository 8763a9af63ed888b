using FluxNative.Testing;

namespace FluxNative.Interop.Tests;

/// <summary>Native failures become <see cref="FluxNativeException"/>s with the right code and the thread's own message.</summary>
public class ErrorTests
{
    [Theory]
    [InlineData(0, FluxStatus.Internal)]      // std::runtime_error
    [InlineData(1, FluxStatus.OutOfMemory)]   // std::bad_alloc
    [InlineData(2, FluxStatus.Internal)]      // a non-std exception (an int)
    [InlineData(3, FluxStatus.InvalidArgument)]
    public void A_native_exception_becomes_a_typed_exception_and_the_process_survives(int kind, FluxStatus expected)
    {
        var exception = Assert.Throws<FluxNativeException>(() => NativeStatus.ThrowIfFailed(NativeMethods.fx_debug_throw(kind)));

        Assert.Equal(expected, exception.Code);
        Assert.False(string.IsNullOrWhiteSpace(exception.Message));
        // Still alive, and the library still answers.
        Assert.Equal(FluxNativeLibrary.AbiVersion, NativeMethods.fx_abi_version());
    }

    [Fact]
    public void The_stack_trace_starts_at_the_caller_not_inside_ThrowIfFailed()
    {
        var exception = Assert.Throws<FluxNativeException>(() => NativeStatus.ThrowIfFailed(NativeMethods.fx_debug_throw(0)));

        Assert.DoesNotContain($"{nameof(NativeStatus)}.{nameof(NativeStatus.ThrowIfFailed)}", exception.StackTrace);
    }

    [Fact]
    public void The_last_error_is_per_thread()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"fluxnative-missing-{Guid.NewGuid():N}.safetensors");
        // Assertions stay on the test thread: an exception on a raw thread would end the process.
        FluxStatus openStatus = FluxStatus.Ok;
        string? messageBefore = null, messageAfter = null, otherThreadMessage = null;
        using var firstFailed = new ManualResetEventSlim();
        using var secondFailed = new ManualResetEventSlim();

        var first = new Thread(() =>
        {
            openStatus = NativeMethods.fx_checkpoint_open(missing, out CheckpointHandle handle);
            handle.Dispose();
            messageBefore = NativeStatus.LastErrorMessage(openStatus);
            firstFailed.Set();
            secondFailed.Wait();
            messageAfter = NativeStatus.LastErrorMessage(openStatus);
        });
        var second = new Thread(() =>
        {
            firstFailed.Wait();
            FluxStatus status = NativeMethods.fx_debug_throw(0);
            otherThreadMessage = NativeStatus.LastErrorMessage(status);
            secondFailed.Set();
        });
        first.Start();
        second.Start();
        Assert.True(first.Join(TimeSpan.FromSeconds(30)) && second.Join(TimeSpan.FromSeconds(30)));

        Assert.NotEqual(FluxStatus.Ok, openStatus);
        Assert.Contains(Path.GetFileName(missing), messageBefore);
        Assert.Equal(messageBefore, messageAfter);
        Assert.NotEqual(messageBefore, otherThreadMessage);
    }

    [Fact]
    public void Status_names_match_the_enum()
    {
        foreach (FluxStatus status in Enum.GetValues<FluxStatus>())
        {
            string expected = status switch
            {
                FluxStatus.Ok => "FX_OK",
                FluxStatus.InvalidArgument => "FX_ERR_INVALID_ARGUMENT",
                FluxStatus.OutOfMemory => "FX_ERR_OUT_OF_MEMORY",
                FluxStatus.Io => "FX_ERR_IO",
                FluxStatus.Format => "FX_ERR_FORMAT",
                FluxStatus.NotFound => "FX_ERR_NOT_FOUND",
                FluxStatus.Unsupported => "FX_ERR_UNSUPPORTED",
                FluxStatus.BufferTooSmall => "FX_ERR_BUFFER_TOO_SMALL",
                FluxStatus.Cancelled => "FX_ERR_CANCELLED",
                FluxStatus.Backend => "FX_ERR_BACKEND",
                FluxStatus.Internal => "FX_ERR_INTERNAL",
                _ => throw new InvalidOperationException($"unmapped {status}"),
            };
            unsafe
            {
                Assert.Equal(expected, NativeStatus.Utf8(NativeMethods.fx_status_name((int)status)));
            }
        }
    }

    [Fact]
    public void A_checkpoint_that_does_not_exist_names_the_path()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"fluxnative-missing-{Guid.NewGuid():N}.safetensors");

        var exception = Assert.Throws<FluxNativeException>(() =>
        {
            FluxStatus status = NativeMethods.fx_checkpoint_open(missing, out CheckpointHandle handle);
            using (handle)
            {
                NativeStatus.ThrowIfFailed(status);
            }
        });

        Assert.Contains(missing, exception.Message);
        Assert.True(exception.Code is FluxStatus.Io or FluxStatus.NotFound, $"unexpected code {exception.Code}");
    }
}
