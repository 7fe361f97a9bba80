/* yunstack-hotplug: start the resume hook when a config drive is plugged in.
 *
 * A guest started from a memory template wakes up as the template: its host then hot-plugs its
 * NICs and its own config drive.  When a block device that is added carries the label config-2,
 * this runs `yunstack-cloudinit resume /dev/NAME` (in a session of its own, not waited for), which
 * reads the drive and takes the identity on it if the guest has none yet.
 *
 * It listens to the kernel's uevents itself, rather than busybox `uevent` starting a shell for
 * every event: plugging a NIC and a drive makes about fifteen, and under TCG each shell costs a
 * clone ~15 ms before the one that matters is looked at.  Only the new device is read, three
 * small reads (ISO 9660 keeps the volume id at 32808, space padded; FAT at 43 for FAT12/16 or 71
 * for FAT32, and mkfs.vfat may upper-case it), so a data volume costs no probe of every disk.
 *
 * The resume hook waits, before the guest prints YUNSTACK-READY, for a uevent listener to be bound
 * (a NETLINK_KOBJECT_UEVENT socket in group 1, /proc/net/netlink): a template saved right after
 * READY then has this listening.  Exit status 1 with a message when the socket cannot be made.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define RESUME "/sbin/yunstack-cloudinit"

struct label_at {
    off_t offset;
    size_t length;
};

static const struct label_at LABELS[] = {{32808, 9}, {43, 11}, {71, 11}};

/* The value of KEY in a uevent message (NUL-separated KEY=VALUE after an "ACTION@PATH" header). */
static const char *field(const char *msg, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (size_t at = 0; at < len; at += strlen(msg + at) + 1) {
        if (strncmp(msg + at, key, klen) == 0 && msg[at + klen] == '=')
            return msg + at + klen + 1;
    }
    return NULL;
}

static int is_config_drive(const char *dev)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int found = 0;
    for (size_t i = 0; i < sizeof LABELS / sizeof LABELS[0] && !found; i++) {
        char label[16] = {0};
        if (pread(fd, label, LABELS[i].length, LABELS[i].offset) != (ssize_t)LABELS[i].length)
            continue;
        found = strncmp(label, "config-2 ", 9) == 0 || strncmp(label, "CONFIG-2 ", 9) == 0;
    }
    close(fd);
    return found;
}

static void resume(const char *dev)
{
    pid_t pid = fork();
    if (pid != 0)
        return; /* the parent goes on listening; a failed fork loses this drive, as a lost uevent would */
    setsid();
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    execl(RESUME, RESUME, "resume", dev, (char *)NULL);
    perror("yunstack-hotplug: " RESUME);
    _exit(127);
}

int main(void)
{
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (sock < 0) {
        perror("yunstack-hotplug: socket");
        return 1;
    }
    int size = 1 << 20; /* a burst of events must not overflow it */
    setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_pid = 0, .nl_groups = 1};
    if (bind(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("yunstack-hotplug: bind");
        return 1;
    }
    char msg[8192];
    for (;;) {
        struct sockaddr_nl from;
        socklen_t fromlen = sizeof from;
        ssize_t len = recvfrom(sock, msg, sizeof msg - 1, 0, (struct sockaddr *)&from, &fromlen);
        if (len <= 0 || from.nl_pid != 0)
            continue; /* only the kernel's own events */
        msg[len] = '\0';
        const char *action = field(msg, (size_t)len, "ACTION");
        const char *subsystem = field(msg, (size_t)len, "SUBSYSTEM");
        const char *name = field(msg, (size_t)len, "DEVNAME");
        if (!action || !subsystem || !name || strcmp(action, "add") != 0 || strcmp(subsystem, "block") != 0)
            continue;
        if (strchr(name, '/') != NULL || strstr(name, "..") != NULL)
            continue; /* a device name, never a path */
        char dev[64];
        if (snprintf(dev, sizeof dev, "/dev/%s", name) >= (int)sizeof dev)
            continue;
        if (is_config_drive(dev))
            resume(dev);
    }
}
