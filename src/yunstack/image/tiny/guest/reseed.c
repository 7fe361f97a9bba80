/* reseed: make the kernel's CRNG reseed from its input pool now.
 *
 * A guest started from a memory template wakes up with the template's CRNG state.  Writing the
 * config drive's random_seed to /dev/urandom mixes it into the input pool, but a 6.1 kernel takes
 * from that pool only at its next scheduled reseed (up to 60 s away) or on a vmgenid event, which
 * this kernel has no driver for; RNDRESEEDCRNG (root only) does it at once.  Exit status 0 on
 * success, 1 with a message on stderr otherwise.
 */
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void)
{
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        perror("reseed: /dev/urandom");
        return 1;
    }
    if (ioctl(fd, RNDRESEEDCRNG) != 0) {
        perror("reseed: RNDRESEEDCRNG");
        return 1;
    }
    close(fd);
    return 0;
}
