using System.Collections.Concurrent;

namespace FluxNative.Scheduling;

/// <summary>
/// Continuous batching for one pipeline. Three stages, each on its own thread, so that they overlap:
/// <list type="number">
/// <item><b>preparing</b>: the prompt is encoded (in arrival order, so an identical prompt right behind finds the
/// cache) and the seeded noise and schedule are drawn;</item>
/// <item><b>denoising</b>: every ready request of the same shape (latent size and text length) shares one
/// transformer forward per step. Each sample carries its own timestep, so a request that arrives while a batch
/// runs joins it at the next step boundary, and one that has done its steps leaves without stopping the others;</item>
/// <item><b>finishing</b>: the latents of a request that left the batch are decoded and its images encoded.</item>
/// </list>
/// Admission is first in, first out: a request never overtakes one that arrived before it, so a head of another
/// shape waits for the running batch to drain instead of being starved by a stream of compatible requests.
/// Cancelling one request completes its task at once and drops it at the next step boundary; the forward itself is
/// interrupted only when no member of the batch still wants it.
/// </summary>
internal sealed class StepScheduler : IDisposable
{
    private readonly FluxTransformer transformer;
    private readonly int maxBatchImages;
    private readonly Action<GenerationJob, CancellationToken> prepare;
    private readonly Func<GenerationJob, CancellationToken, GenerationResult> finish;
    private readonly object gate = new();
    private readonly LinkedList<GenerationJob> waiting = new();
    private readonly List<GenerationJob> active = [];
    private readonly BlockingCollection<GenerationJob> toPrepare = new();
    private readonly BlockingCollection<GenerationJob> toFinish = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly List<Thread> threads = [];
    private CancellationTokenSource? stepCancel;
    private StepBuffers? buffers;
    private bool disposed;

    /// <param name="transformer">Runs the steps.</param>
    /// <param name="maxBatchImages">The most images in one forward; a single request with more runs alone.</param>
    /// <param name="prepare">Encodes the prompt (and the input image) and calls <see cref="GenerationJob.Start"/> (on the preparing thread).</param>
    /// <param name="finish">Decodes and encodes the images of a denoised request (on the finishing thread).</param>
    public StepScheduler(
        FluxTransformer transformer, int maxBatchImages, Action<GenerationJob, CancellationToken> prepare,
        Func<GenerationJob, CancellationToken, GenerationResult> finish)
    {
        this.transformer = transformer;
        this.maxBatchImages = maxBatchImages;
        this.prepare = prepare;
        this.finish = finish;
    }

    /// <summary>Requests accepted but not yet in a batch (encoding, or waiting for room or for their shape's turn).</summary>
    public int Waiting
    {
        get
        {
            lock (gate)
            {
                return waiting.Count;
            }
        }
    }

    /// <summary>Every waiting request is encoded and prepared (tests use it to start a known batch).</summary>
    internal bool AllWaitingReady
    {
        get
        {
            lock (gate)
            {
                return waiting.All(j => j.IsReady || j.IsOver);
            }
        }
    }

    /// <summary>Images in the batch the transformer runs now.</summary>
    public int ActiveImages
    {
        get
        {
            lock (gate)
            {
                return active.Sum(j => j.Plan.NumImages);
            }
        }
    }

    /// <summary>Queues <paramref name="job"/>; the task completes with its result, or cancelled when its token fires.</summary>
    /// <exception cref="ObjectDisposedException">The pipeline is disposed.</exception>
    public Task<GenerationResult> Submit(GenerationJob job)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, typeof(FluxPipeline));
            StartThreads();
            waiting.AddLast(job);
            toPrepare.Add(job);
        }

        // Registered after it is queued, so that a token that has already fired finds it there (and cancels it now).
        CancellationTokenRegistration registration = job.CancellationToken.Register(static state =>
        {
            (StepScheduler scheduler, GenerationJob cancelled) = ((StepScheduler, GenerationJob))state!;
            scheduler.Cancel(cancelled);
        }, (this, job));
        job.Completion.Task.ContinueWith(static (_, r) => ((CancellationTokenRegistration)r!).Dispose(), registration, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return job.Completion.Task;
    }

    /// <summary>Stops the stages (a running forward, encode or decode stops at its next check) and fails what is left.</summary>
    public void Dispose()
    {
        List<GenerationJob> pending;
        lock (gate)
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
            stopping.Cancel();
            pending = [.. waiting, .. active];
            waiting.Clear();
            active.Clear();
            Monitor.PulseAll(gate);
        }

        toPrepare.CompleteAdding();
        toFinish.CompleteAdding();
        foreach (Thread thread in threads)
        {
            if (thread != Thread.CurrentThread)
            {
                thread.Join();
            }
        }

        foreach (GenerationJob job in pending)
        {
            Abandon(job);
        }

        stopping.Dispose();
        toPrepare.Dispose();
        toFinish.Dispose();
    }

    private static void Abandon(GenerationJob job) =>
        job.Completion.TrySetException(new ObjectDisposedException(nameof(FluxPipeline), "The pipeline was disposed before this generation finished."));

    private void StartThreads()
    {
        if (threads.Count > 0)
        {
            return;
        }

        foreach ((string name, ThreadStart loop) in new (string, ThreadStart)[]
                 {
                     ("FluxNative preparing", PrepareLoop), ("FluxNative denoising", DenoiseLoop), ("FluxNative finishing", FinishLoop),
                 })
        {
            var thread = new Thread(loop) { Name = name, IsBackground = true };
            threads.Add(thread);
            thread.Start();
        }
    }

    private void Cancel(GenerationJob job)
    {
        lock (gate)
        {
            if (!job.Completion.TrySetCanceled(job.CancellationToken))
            {
                return;
            }

            waiting.Remove(job);
            if (active.Count > 0 && active.TrueForAll(j => j.IsOver))
            {
                stepCancel?.Cancel();   // nobody left in the running forward wants it
            }

            Monitor.PulseAll(gate);
        }
    }

    private void Fail(GenerationJob job, Exception e)
    {
        lock (gate)
        {
            job.Completion.TrySetException(e);
            waiting.Remove(job);
            active.Remove(job);
            Monitor.PulseAll(gate);
        }
    }

    /// <summary>Calls the caller's progress handler; one that throws fails its own request, not the batch.</summary>
    private void Report(GenerationJob job, Action<GenerationJob> report)
    {
        try
        {
            report(job);
        }
        catch (Exception e)
        {
            Fail(job, e);
        }
    }

    private void PrepareLoop()
    {
        foreach (GenerationJob job in toPrepare.GetConsumingEnumerable())
        {
            if (job.IsOver)
            {
                continue;
            }

            try
            {
                using (var linked = CancellationTokenSource.CreateLinkedTokenSource(job.CancellationToken, stopping.Token))
                {
                    prepare(job, linked.Token);
                }

                lock (gate)
                {
                    Monitor.PulseAll(gate);
                }
            }
            catch (OperationCanceledException) when (job.CancellationToken.IsCancellationRequested || stopping.IsCancellationRequested)
            {
                // Cancelled (its task is final already) or the pipeline is closing (Dispose fails it).
            }
            catch (Exception e)
            {
                Fail(job, e);
            }
        }
    }

    private void DenoiseLoop()
    {
        while (true)
        {
            List<GenerationJob> batch;
            CancellationTokenSource step;
            lock (gate)
            {
                while (true)
                {
                    if (disposed)
                    {
                        return;
                    }

                    active.RemoveAll(static j =>
                    {
                        if (j.IsOver)
                        {
                            j.ReleaseStepCaches();   // here, on the scheduler thread: no forward is using them
                        }

                        return j.IsOver;
                    });
                    Admit();
                    if (active.Count > 0)
                    {
                        break;
                    }

                    buffers = null;   // idle: hold no finished request's latents
                    Monitor.Wait(gate);
                }

                batch = [.. active];
                step = stepCancel = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
            }

            try
            {
                Step(batch, step.Token);
            }
            catch (OperationCanceledException) when (step.IsCancellationRequested)
            {
                // Every member was cancelled, or the pipeline is closing: nobody wants this step any more.
            }
            catch (Exception e)
            {
                foreach (GenerationJob job in batch)
                {
                    Fail(job, e);
                    job.ReleaseStepCaches();
                }
            }
            finally
            {
                lock (gate)
                {
                    stepCancel = null;
                }

                step.Dispose();
            }
        }
    }

    /// <summary>Moves ready requests from the head of the queue into the batch, in order, while they fit (under the lock).</summary>
    private void Admit()
    {
        int images = active.Sum(j => j.Plan.NumImages);
        GenerationJob? shape = active.Count > 0 ? active[0] : null;
        while (waiting.First is { } node)
        {
            GenerationJob job = node.Value;
            if (job.IsOver)
            {
                waiting.RemoveFirst();
                continue;
            }

            if (!job.IsReady || (shape is not null && (!SameShape(shape, job) || images + job.Plan.NumImages > maxBatchImages)))
            {
                break;
            }

            waiting.RemoveFirst();
            active.Add(job);
            images += job.Plan.NumImages;
            shape ??= job;
        }
    }

    /// <summary>Requests that can share a forward: the same number of image tokens laid out alike, and of text tokens.</summary>
    private static bool SameShape(GenerationJob a, GenerationJob b) =>
        a.Plan.LatentWidth == b.Plan.LatentWidth && a.Plan.LatentHeight == b.Plan.LatentHeight && a.TextTokens == b.TextTokens;

    /// <summary>One transformer forward for the whole batch, then each request's own Euler step, progress, and leaving when done.</summary>
    private void Step(List<GenerationJob> batch, CancellationToken token)
    {
        foreach (GenerationJob job in batch)
        {
            if (job.Admitted is null)
            {
                job.Admitted = job.Elapsed;
                Report(job, static j => j.ReportStarted());
            }

            job.EnsureStepCaches(transformer);
        }

        StepBuffers b = buffers is { } held && held.Holds(batch) ? held : buffers = new StepBuffers(batch, transformer.Config);
        b.Load(batch);
        token.ThrowIfCancellationRequested();
        transformer.Forward(b.Inputs, b.Velocity, token);

        int offset = 0, image = 0, blocksPerImage = transformer.Config.Depth + transformer.Config.DepthSingle;
        foreach (GenerationJob job in batch)
        {
            int length = job.Latents.Length;
            for (int k = 0; k < job.Plan.NumImages; k++)
            {
                int blocks = b.BlocksComputed[image + k];
                job.BlocksComputed += blocks;
                job.BlocksTotal += blocksPerImage;
                job.CachedSteps += blocks < blocksPerImage ? 1 : 0;
            }

            image += job.Plan.NumImages;
            if (!job.IsOver)
            {
                float dt = (float)(job.Schedule[job.Step + 1] - job.Schedule[job.Step]);
                Latents.EulerStep(job.Latents, b.Velocity.AsSpan(offset, length), dt);
                job.Step++;
                job.PeakBatchImages = Math.Max(job.PeakBatchImages, b.Images);
                if (job.Denoised)
                {
                    // Before the last progress report: the caller's handler is not denoising time, and the steps the
                    // reports delimit then add up to the denoising stage.
                    job.DenoisedAt = job.Elapsed;
                }

                Report(job, static j => j.ReportStep());
                if (job.Denoised)
                {
                    job.ReleaseStepCaches();
                    lock (gate)
                    {
                        active.Remove(job);
                        if (!disposed && !job.IsOver)
                        {
                            toFinish.Add(job);
                        }
                    }
                }
            }

            offset += length;
        }
    }

    private void FinishLoop()
    {
        foreach (GenerationJob job in toFinish.GetConsumingEnumerable())
        {
            if (job.IsOver)
            {
                continue;
            }

            try
            {
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(job.CancellationToken, stopping.Token);
                job.Completion.TrySetResult(finish(job, linked.Token));
            }
            catch (OperationCanceledException) when (job.CancellationToken.IsCancellationRequested)
            {
                job.Completion.TrySetCanceled(job.CancellationToken);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                Abandon(job);
            }
            catch (Exception e)
            {
                job.Completion.TrySetException(e);
            }
        }
    }

    /// <summary>
    /// The batched tensors of one batch composition: built when the members change, reused while they stay (only the
    /// latents and timesteps change from step to step).
    /// </summary>
    private sealed class StepBuffers
    {
        private readonly GenerationJob[] members;
        private readonly float[] img;
        private readonly float[] timesteps;

        public StepBuffers(List<GenerationJob> batch, FluxTransformerConfig config)
        {
            members = [.. batch];
            GenerationJob first = batch[0];
            int tokens = first.Plan.ImageTokens, textTokens = first.TextTokens;
            Images = batch.Sum(j => j.Plan.NumImages);
            img = new float[checked((long)Images * tokens * config.InChannels)];
            timesteps = new float[Images];
            float[]? guidance = config.GuidanceEmbed ? new float[Images] : null;
            var txt = new float[checked((long)Images * textTokens * config.ContextInDim)];
            var y = new float[checked((long)Images * config.VecInDim)];
            int image = 0;
            foreach (GenerationJob job in batch)
            {
                int n = job.Plan.NumImages;
                job.Txt.CopyTo(txt, (long)image * textTokens * config.ContextInDim);
                job.Pooled.CopyTo(y, (long)image * config.VecInDim);
                guidance?.AsSpan(image, n).Fill((float)job.Plan.Guidance);
                image += n;
            }

            Velocity = new float[checked((long)Images * tokens * config.OutChannels)];
            BlocksComputed = new int[Images];
            FluxStepCache?[]? caches = null;
            if (batch.Exists(j => j.StepCaches is not null))
            {
                caches = new FluxStepCache?[Images];
                image = 0;
                foreach (GenerationJob job in batch)
                {
                    job.StepCaches?.CopyTo(caches, image);
                    image += job.Plan.NumImages;
                }
            }

            Inputs = new FluxForwardInputs
            {
                Batch = Images,
                ImageTokens = tokens,
                TextTokens = textTokens,
                Img = img,
                ImgIds = FluxNative.Latents.ImageIds(Images, first.Plan.LatentHeight, first.Plan.LatentWidth),
                Txt = txt,
                TxtIds = FluxNative.Latents.TextIds(Images, textTokens),
                Y = y,
                Timesteps = timesteps,
                Guidance = guidance,
                StepCaches = caches,
                BlocksComputed = BlocksComputed,
            };
        }

        /// <summary>The blocks each image ran in the last forward.</summary>
        public int[] BlocksComputed { get; }

        /// <summary>Images in the batch.</summary>
        public int Images { get; }

        public FluxForwardInputs Inputs { get; }

        public float[] Velocity { get; }

        public bool Holds(List<GenerationJob> batch)
        {
            if (batch.Count != members.Length)
            {
                return false;
            }

            for (int k = 0; k < members.Length; k++)
            {
                if (!ReferenceEquals(batch[k], members[k]))
                {
                    return false;
                }
            }

            return true;
        }

        /// <summary>Each request's latents and its own timestep, for this step.</summary>
        public void Load(List<GenerationJob> batch)
        {
            int offset = 0, image = 0;
            foreach (GenerationJob job in batch)
            {
                job.Latents.CopyTo(img, offset);
                offset += job.Latents.Length;
                timesteps.AsSpan(image, job.Plan.NumImages).Fill((float)job.Schedule[job.Step]);
                image += job.Plan.NumImages;
            }
        }
    }
}
