/* Decodes each PNG named on the command line ROUNDS times with libpng's simplified API into
 * BGRA (what the viewer needs), printing "file best_seconds" per file. Bench helper only. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int rounds = atoi(argv[1]);
    for (int i = 2; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f)
            return 1;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        unsigned char *data = malloc(n);
        if (fread(data, 1, n, f) != (size_t)n)
            return 1;
        fclose(f);
        double best = 1e9;
        for (int r = 0; r < rounds; r++) {
            png_image img = { .version = PNG_IMAGE_VERSION };
            double t0 = now();
            if (!png_image_begin_read_from_memory(&img, data, n))
                return 2;
            img.format = PNG_FORMAT_BGRA;
            unsigned char *out = malloc(PNG_IMAGE_SIZE(img));
            if (!png_image_finish_read(&img, NULL, out, 0, NULL))
                return 3;
            double t = now() - t0;
            if (t < best)
                best = t;
            free(out);
        }
        printf("%s %.6f\n", argv[i], best);
        free(data);
    }
    return 0;
}
