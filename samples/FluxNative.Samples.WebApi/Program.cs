// A minimal ASP.NET Core app that serves FLUX.1: POST /generate {"prompt": "..."} answers a PNG.
//   dotnet run --project samples/FluxNative.Samples.WebApi              (the tiny demo models: appsettings.json)
//   FluxPipeline__Demo=false FluxPipeline__ModelDirectory=/models/FLUX.1-dev dotnet run --project samples/FluxNative.Samples.WebApi
//   curl -s localhost:5000/generate -H 'Content-Type: application/json' -d '{"prompt":"a red fox in the snow","seed":42}' -o fox.png
using FluxNative;
using FluxNative.Hosting;

WebApplicationBuilder builder = WebApplication.CreateBuilder(args);

// The pipeline's settings come from the "FluxPipeline" section (appsettings.json, environment variables, the
// command line); it loads in the background when the app starts and is freed when it stops.
builder.Services.AddFluxPipeline(builder.Configuration.GetSection(FluxPipelineHostOptions.SectionName));

WebApplication app = builder.Build();

app.MapPost("/generate", async (GenerateBody body, FluxPipelineService flux, CancellationToken cancellationToken) =>
{
    try
    {
        GenerationResult result = await flux.GenerateAsync(
            new GenerationRequest { Prompt = body.Prompt, Seed = body.Seed, Width = body.Width, Height = body.Height, Steps = body.Steps },
            cancellationToken: cancellationToken);
        return Results.File(result.Images[0].Bytes, "image/png");
    }
    catch (GenerationRequestException e)
    {
        // The pipeline names the field at fault; a bad request is the client's to fix.
        return Results.ValidationProblem(new Dictionary<string, string[]> { [e.Field] = [e.Message] });
    }
});

// Ready once the model is loaded (a load balancer's readiness probe).
app.MapGet("/ready", (FluxPipelineService flux) =>
    flux.IsReady ? Results.Ok("ready") : Results.Problem(flux.LoadError?.Message ?? "loading", statusCode: 503));

app.Run();

/// <summary>The body of POST /generate: a prompt, and optionally the seed, size and steps.</summary>
internal sealed record GenerateBody(string Prompt, long? Seed = null, int? Width = null, int? Height = null, int? Steps = null);

/// <summary>Visible to the tests (WebApplicationFactory).</summary>
public partial class Program;
