using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// One image's step cache for <see cref="FluxTransformer"/> forwards (<see cref="StepCacheOptions"/>): give it, in
/// <see cref="FluxForwardInputs.StepCaches"/>, to every forward of that image's run, in step order. It belongs to one
/// image, one run and one model; <see cref="Reset"/> starts a new run.
/// </summary>
public sealed class FluxStepCache : IDisposable
{
    private FluxStepCache(FluxStepCacheHandle handle, StepCacheOptions options, int totalSteps)
    {
        Handle = handle;
        Options = options;
        TotalSteps = totalSteps;
    }

    /// <summary>The policy it follows.</summary>
    public StepCacheOptions Options { get; }

    /// <summary>The steps of the run it was created for.</summary>
    public int TotalSteps { get; }

    internal FluxStepCacheHandle Handle { get; }

    /// <summary>Creates a cache for a run of <paramref name="totalSteps"/> steps on <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">A field of <paramref name="options"/> is out of range (the message names it).</exception>
    public static unsafe FluxStepCache Create(FluxTransformer model, StepCacheOptions options, int totalSteps)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(totalSteps, 1);
        if (options.Problem() is { } problem)
        {
            throw new ArgumentException(problem.Message, nameof(options));
        }

        FxFluxStepCacheParams parameters;
        NativeMethods.fx_flux_step_cache_params_init(&parameters);
        parameters.Threshold = (float)options.Threshold;
        parameters.HeadBlocks = options.HeadBlocks;
        parameters.TailBlocks = options.TailBlocks;
        parameters.WarmupSteps = options.WarmupSteps;
        parameters.FinalSteps = options.FinalSteps;
        parameters.MaxConsecutive = options.MaxConsecutive;
        parameters.TotalSteps = totalSteps;
        NativeStatus.ThrowIfFailed(NativeMethods.fx_flux_step_cache_create(model.Handle, &parameters, out FluxStepCacheHandle handle));
        return new FluxStepCache(handle, options, totalSteps);
    }

    /// <summary>Forwards seen since creation or <see cref="Reset"/>.</summary>
    public int Steps => Stats().Steps;

    /// <summary>Of <see cref="Steps"/>, those that reused the middle blocks.</summary>
    public int ReusedSteps => Stats().Reused;

    /// <summary>
    /// The relative L1 change of the head blocks' residual measured at the last step, against the last step that ran
    /// every block (NaN before there is one): what <see cref="StepCacheOptions.Threshold"/> is compared with.
    /// </summary>
    public double LastChange => Stats().LastChange;

    /// <summary>Forgets every step: the next forward is the first of a new run.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(Handle.IsClosed, this);
        NativeStatus.ThrowIfFailed(NativeMethods.fx_flux_step_cache_reset(Handle));
    }

    /// <summary>Frees the cache's memory (its saved residuals).</summary>
    public void Dispose() => Handle.Dispose();

    private unsafe (int Steps, int Reused, double LastChange) Stats()
    {
        ObjectDisposedException.ThrowIf(Handle.IsClosed, this);
        int steps, reused;
        double change;
        NativeStatus.ThrowIfFailed(NativeMethods.fx_flux_step_cache_stats(Handle, &steps, &reused, &change));
        return (steps, reused, change);
    }
}
