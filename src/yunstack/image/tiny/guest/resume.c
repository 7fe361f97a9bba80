/* resume.c: a memory template's clone takes the identity its host sent, in C.
 *
 * yunstack-cloudinit's resume does the same in shell, and did this too until it was measured: a
 * clone runs under TCG with an empty translation cache, where each process it starts costs it
 * 10-100 ms, and the shell resume started about forty (busybox sh, awk for the JSON, ip, date,
 * base64, ...).  This runs inside yunstack-hotplug's child, which needs no exec, and starts only
 * what must run as processes: dropbear, the DHCP client and the user data.
 *
 * The host sends, beside the config drive's files, what the boot's cloudinit would work out of
 * them (yunstack/compute/qemu/identity.py, digest): "resume", lines of
 *
 *     instance-id UUID
 *     hostname NAME                 (letters, digits, '-'; absent: the hostname stays)
 *     ipv4 MAC ADDR/PREFIX GATEWAY MTU DOMAIN DNS,DNS  (what that NIC's DHCP lease will carry; "-"
 *                                   for no gateway, domain or DNS server)
 *     meta KEY VALUE                (one file of /run/yunstack/meta each)
 *
 * and "authorized_keys", "random_seed" (raw bytes), the ssh host key.  In the order of the shell
 * resume, and printing its markers: the files go to /run/yunstack; each NIC gets its own MAC
 * (down, new address), then the address, MTU, default route and DNS servers its lease will
 * carry, and comes up; the clock is set from the host's, never back; the random seed is mixed in
 * and the CRNG reseeded; the template's dropbear gives way to one with the new host key; the user
 * data runs.  Then YUNSTACK-READY, and then DHCP starts, in the background: its lease confirms
 * the address (udhcpc.script leaves a host-set address in place) and adds the subnet's classless
 * routes, which only the network host knows (the metadata route on a network without a router).
 * A guest whose eth0 was given no address leases one before READY, as a boot does.
 * Each process it starts runs in a session of its own, with no signal blocked.
 */
#define _GNU_SOURCE
#include "resume.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN "/run/yunstack"
#define HOSTKEY "/etc/dropbear/dropbear_ed25519_host_key"
#define DHCP_SCRIPT "/usr/share/udhcpc/default.script"
#define MAX_NICS 8
#define MAX_META 256 /* Nova allows 128 metadata items by default */

/* The files of the config drive that stay in /run/yunstack for the guest's own scripts. */
static const char *const KEPT[] = {"meta_data.json", "user_data", "network_data.json", "host_time", "macs"};

struct address {
    char mac[18];
    char cidr[48];
    char gateway[40];
    int mtu;
    char domain[256];
    char dns[256];
};

struct identity {
    char *text; /* the "resume" record; the fields below point into it */
    const char *instance_id;
    const char *hostname;
    struct address addresses[MAX_NICS];
    int n_addresses;
    const char *meta_keys[MAX_META];
    const char *meta_values[MAX_META];
    int n_meta;
};

static void say(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vdprintf(STDOUT_FILENO, format, args);
    va_end(args);
}

static void sleep_ms(long ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

/* The whole file, NUL-terminated (its length in *len); NULL when it cannot be read. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t size = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t n;
    while (buf != NULL && (n = read(fd, buf + size, cap - size - 1)) > 0) {
        size += (size_t)n;
        if (size + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
        }
    }
    close(fd);
    if (buf == NULL)
        return NULL;
    buf[size] = '\0';
    if (len != NULL)
        *len = size;
    return buf;
}

static int spit(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    int ok = write(fd, data, len) == (ssize_t)len;
    close(fd);
    return ok ? 0 : -1;
}

/* The first line of a file, without its newline, in buf; "" when there is none. */
static char *first_line(const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, size - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* The process runs (it exists and is no zombie): kill(pid, 0) answers for a zombie too. */
static int alive(pid_t pid)
{
    char path[32], stat[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    first_line(path, stat, sizeof stat);
    const char *end = strrchr(stat, ')');
    return end != NULL && end[1] == ' ' && end[2] != 'Z' && end[2] != 'X' && end[2] != '\0';
}

static pid_t pid_in(const char *path)
{
    char buf[32];
    long pid = atol(first_line(path, buf, sizeof buf));
    return pid > 1 ? (pid_t)pid : 0;
}

/* yunstack-cloudinit's lock: one run at a time; a lock whose holder is gone is taken over. */
static void lock(void)
{
    while (mkdir(RUN "/lock", 0755) != 0) {
        pid_t holder = pid_in(RUN "/lock/pid");
        if (holder != 0 && !alive(holder)) {
            unlink(RUN "/lock/pid");
            rmdir(RUN "/lock");
            continue;
        }
        sleep_ms(100);
    }
    char pid[16];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    spit(RUN "/lock/pid", pid, (size_t)n, 0644);
}

static void unlock(void)
{
    unlink(RUN "/lock/pid");
    rmdir(RUN "/lock");
}

/* Parse the "resume" record in place; 0 when it names an instance. */
static int parse(char *text, struct identity *id)
{
    memset(id, 0, sizeof *id);
    id->text = text;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *value = strchr(line, ' ');
        if (value == NULL)
            continue;
        *value++ = '\0';
        if (strcmp(line, "instance-id") == 0) {
            id->instance_id = value;
        } else if (strcmp(line, "hostname") == 0) {
            id->hostname = value;
        } else if (strcmp(line, "ipv4") == 0 && id->n_addresses < MAX_NICS) {
            struct address *a = &id->addresses[id->n_addresses];
            int end = 0;
            if (sscanf(value, "%17s %47s %39s %d %255s %255s%n", a->mac, a->cidr, a->gateway, &a->mtu, a->domain,
                       a->dns, &end) == 6 && value[end] == '\0')
                id->n_addresses++; /* a line with a longer field (or more of them) is not taken */
        } else if (strcmp(line, "meta") == 0 && id->n_meta < MAX_META) {
            char *meta_value = strchr(value, ' ');
            if (meta_value == NULL || value[0] == '.' || strchr(value, '/') != NULL)
                continue;
            *meta_value++ = '\0';
            id->meta_keys[id->n_meta] = value;
            id->meta_values[id->n_meta++] = meta_value;
        }
    }
    return id->instance_id != NULL && id->instance_id[0] != '\0' && strcmp(id->instance_id, "none") != 0 ? 0 : -1;
}

/* The name of the interface whose MAC is MAC (lower case, as sysfs shows it), in name. */
static int interface_with(const char *mac, char name[IF_NAMESIZE])
{
    DIR *dir = opendir("/sys/class/net");
    if (dir == NULL)
        return -1;
    int found = -1;
    struct dirent *entry;
    while (found != 0 && (entry = readdir(dir)) != NULL) {
        char path[300], now[32];
        if (entry->d_name[0] == '.' || strlen(entry->d_name) >= IF_NAMESIZE)
            continue;
        snprintf(path, sizeof path, "/sys/class/net/%s/address", entry->d_name);
        if (strcasecmp(first_line(path, now, sizeof now), mac) == 0) {
            strcpy(name, entry->d_name);
            found = 0;
        }
    }
    closedir(dir);
    return found;
}

static int set_up(int sock, const char *name, int up)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) != 0)
        return -1;
    ifr.ifr_flags = up ? ifr.ifr_flags | IFF_UP : ifr.ifr_flags & ~IFF_UP;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

/* Each NIC off the template's MAC and onto its own: down (its IPv6 addresses go with the link; it
 * has no IPv4 one, the template's NIC led nowhere), then the new address, which virtio-net passes
 * to QEMU over its control queue.  It stays down until its address is set. */
static void take_macs(int sock)
{
    char *macs = slurp(RUN "/macs", NULL);
    for (char *line = macs ? strtok(macs, "\n") : NULL; line != NULL; line = strtok(NULL, "\n")) {
        char old[18], own[18], name[IF_NAMESIZE];
        unsigned char mac[6];
        if (sscanf(line, "%17s %17s", old, own) != 2 || interface_with(old, name) != 0 ||
            sscanf(own, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6)
            continue;
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
        ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
        memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
        if (set_up(sock, name, 0) != 0 || ioctl(sock, SIOCSIFHWADDR, &ifr) != 0)
            say("yunstack: %s keeps its template's MAC %s: %s\n", name, old, strerror(errno));
    }
    free(macs);
}

static int set_in(int sock, const char *name, unsigned long request, in_addr_t value)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = value;
    return ioctl(sock, request, &ifr);
}

/* What the NIC's lease will carry: its address, MTU and default route; the NIC comes up.  A file
 * of its own tells udhcpc.script the address is the host's, to keep until the lease. */
static int set_address(int sock, const struct address *a, char *name)
{
    char addr[48];
    strcpy(addr, a->cidr);
    char *slash = strchr(addr, '/');
    int prefix = slash ? atoi(slash + 1) : 32;
    if (slash)
        *slash = '\0';
    struct in_addr ip, gateway;
    if (inet_pton(AF_INET, addr, &ip) != 1 || prefix < 0 || prefix > 32)
        return -1;
    in_addr_t mask = prefix == 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
    struct ifreq mtu = {0};
    snprintf(mtu.ifr_name, sizeof mtu.ifr_name, "%s", name);
    mtu.ifr_mtu = a->mtu;
    if (a->mtu >= 576 && ioctl(sock, SIOCSIFMTU, &mtu) != 0)
        say("yunstack: %s: MTU %d: %s\n", name, a->mtu, strerror(errno));
    if (set_in(sock, name, SIOCSIFADDR, ip.s_addr) != 0 || set_in(sock, name, SIOCSIFNETMASK, mask) != 0 ||
        set_up(sock, name, 1) != 0) {
        say("yunstack: %s: cannot set %s: %s\n", name, a->cidr, strerror(errno));
        return -1;
    }
    char kept[IF_NAMESIZE + 32];
    snprintf(kept, sizeof kept, RUN "/ipv4.%s", name);
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", a->cidr);
    spit(kept, line, (size_t)n, 0644);
    if (strcmp(a->gateway, "-") != 0 && inet_pton(AF_INET, a->gateway, &gateway) == 1) {
        struct rtentry route = {0};
        struct sockaddr_in *dst = (struct sockaddr_in *)&route.rt_dst, *gw = (struct sockaddr_in *)&route.rt_gateway,
                           *genmask = (struct sockaddr_in *)&route.rt_genmask;
        dst->sin_family = gw->sin_family = genmask->sin_family = AF_INET;
        gw->sin_addr = gateway;
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        route.rt_dev = name;
        if (ioctl(sock, SIOCADDRT, &route) != 0 && errno != EEXIST)
            say("yunstack: %s: no default route via %s: %s\n", name, a->gateway, strerror(errno));
    }
    return 0;
}

/* In a child before its exec: its own session, the signals its parent blocked or ignored back. */
static void as_own_process(void)
{
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGCHLD, SIG_DFL);
}

/* /etc/resolv.conf as udhcpc.script writes it from a lease: the search domain, the servers. */
static void write_resolv_conf(const struct address *a)
{
    char text[512];
    size_t used = 0;
    if (strcmp(a->domain, "-") != 0)
        used += (size_t)snprintf(text, sizeof text, "search %s\n", a->domain);
    char servers[256];
    snprintf(servers, sizeof servers, "%s", strcmp(a->dns, "-") != 0 ? a->dns : "");
    for (char *server = strtok(servers, ","); server != NULL && used < sizeof text; server = strtok(NULL, ","))
        used += (size_t)snprintf(text + used, sizeof text - used, "nameserver %s\n", server);
    spit("/etc/resolv.conf", text, used < sizeof text ? used : sizeof text - 1, 0644);
}

/* Start argv with stdout and stderr to out (NULL: the console), stdin from /dev/null. */
static pid_t start(char *const argv[], const char *out)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    as_own_process();
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0)
        dup2(null, STDIN_FILENO);
    if (out != NULL) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
    } else {
        dup2(STDOUT_FILENO, STDERR_FILENO);
    }
    execvp(argv[0], argv);
    say("yunstack: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int wait_for(pid_t pid)
{
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The template's DHCP client (its NIC led nowhere) is stopped first thing; returns its PID. */
static pid_t stop_template_dhcp(void)
{
    pid_t old = pid_in("/run/udhcpc.eth0.pid");
    if (old != 0)
        kill(old, SIGTERM);
    return old;
}

/* The clone's DHCP client, once the template's is gone (it removes its pid file, which is the new
 * one's too, as it exits; 2 s at most). */
static pid_t start_dhcp(const char *hostname, pid_t old)
{
    for (int i = 0; old != 0 && alive(old) && i < 40; i++)
        sleep_ms(50);
    unlink("/run/udhcpc.eth0.pid");
    char option[300];
    snprintf(option, sizeof option, "hostname:%s", hostname);
    /* The boot's flags (cloudinit's net_up): a few tries, then on in the background. */
    char *argv[] = {"udhcpc", "-i", "eth0", "-s", DHCP_SCRIPT, "-p", "/run/udhcpc.eth0.pid", "-t", "5", "-T", "1",
                    "-b", "-O", "staticroutes", "-x", option, NULL};
    return start(argv, RUN "/udhcpc.log");
}

/* The clock from the host's (epoch seconds with a fraction); never back. */
static void set_clock(void)
{
    char buf[64];
    double host = strtod(first_line(RUN "/host_time", buf, sizeof buf), NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (host > (double)now.tv_sec + now.tv_nsec / 1e9) {
        struct timespec to = {.tv_sec = (time_t)host, .tv_nsec = (long)((host - (double)(time_t)host) * 1e9)};
        clock_settime(CLOCK_REALTIME, &to);
    }
}

/* The random seed into the input pool, then a reseed of the CRNG, which the clone shares with its
 * template until then (a 6.1 kernel would wait up to 60 s for its next scheduled one). */
static void seed_rng(const char *incoming)
{
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char path[256];
    snprintf(path, sizeof path, "%s/random_seed", incoming);
    size_t len = 0;
    char *seed = slurp(path, &len);
    if (seed != NULL && write(fd, seed, len) != (ssize_t)len)
        say("yunstack: the random seed was not taken: %s\n", strerror(errno));
    free(seed);
    if (ioctl(fd, RNDRESEEDCRNG) != 0)
        say("yunstack: no CRNG reseed: %s\n", strerror(errno));
    close(fd);
}

/* The template's dropbear is killed (its key is every clone's, and a clone that just woke up has
 * no session to end), and the host's new key put in place.  Returns the old one's PID. */
static pid_t new_hostkey(const char *incoming)
{
    pid_t old = pid_in("/run/dropbear.pid");
    if (old != 0)
        kill(old, SIGKILL);
    unlink("/run/dropbear.pid");
    char path[256];
    snprintf(path, sizeof path, "%s/ssh_host_ed25519_key", incoming);
    size_t len = 0;
    char *key = slurp(path, &len);
    unlink(HOSTKEY);
    if (key == NULL || spit(HOSTKEY, key, len, 0600) != 0) /* /etc is not /run's file system */
        say("yunstack: no ssh host key: %s\n", strerror(errno));
    free(key);
    unlink(path);
    return old;
}

static void write_meta(const struct identity *id)
{
    DIR *dir = opendir(RUN "/meta");
    struct dirent *entry;
    while (dir != NULL && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] != '.')
            unlinkat(dirfd(dir), entry->d_name, 0);
    }
    if (dir != NULL)
        closedir(dir);
    mkdir(RUN "/meta", 0755);
    for (int i = 0; i < id->n_meta; i++) {
        char path[300];
        if (snprintf(path, sizeof path, RUN "/meta/%s", id->meta_keys[i]) >= (int)sizeof path)
            continue;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dprintf(fd, "%s\n", id->meta_values[i]);
            close(fd);
        }
    }
}

static void write_authorized_keys(const char *incoming)
{
    char path[256];
    snprintf(path, sizeof path, "%s/authorized_keys", incoming);
    size_t len = 0;
    char *keys = slurp(path, &len);
    if (keys == NULL || len == 0) {
        unlink("/root/.ssh/authorized_keys");
    } else {
        mkdir("/root/.ssh", 0700);
        chmod("/root/.ssh", 0700);
        spit("/root/.ssh/authorized_keys.tmp", keys, len, 0600);
        rename("/root/.ssh/authorized_keys.tmp", "/root/.ssh/authorized_keys");
    }
    free(keys);
}

static void set_hostname(const char *name)
{
    if (sethostname(name, strlen(name)) != 0)
        say("yunstack: hostname %s: %s\n", name, strerror(errno));
    char text[320];
    int n = snprintf(text, sizeof text, "%s\n", name);
    spit("/etc/hostname", text, (size_t)n, 0644);
    n = snprintf(text, sizeof text, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n", name);
    spit("/etc/hosts", text, (size_t)n, 0644);
}

static void ipv4_of(int sock, const char *name, char *out, size_t size)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    snprintf(out, size, "none");
    if (ioctl(sock, SIOCGIFADDR, &ifr) == 0)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, out, (socklen_t)size);
}

/* eth0's global IPv6 addresses, comma-separated, as the shell resume reports them: SLAAC has
 * usually not finished by now, and goes on. */
static void ipv6_of(const char *name, char *out, size_t size)
{
    struct ifaddrs *all, *a;
    size_t used = 0;
    out[0] = '\0';
    if (getifaddrs(&all) == 0) {
        for (a = all; a != NULL; a = a->ifa_next) {
            if (a->ifa_addr == NULL || a->ifa_addr->sa_family != AF_INET6 || strcmp(a->ifa_name, name) != 0)
                continue;
            struct in6_addr *ip = &((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr;
            char text[INET6_ADDRSTRLEN];
            if (IN6_IS_ADDR_LINKLOCAL(ip) || IN6_IS_ADDR_LOOPBACK(ip) || !inet_ntop(AF_INET6, ip, text, sizeof text))
                continue;
            used += (size_t)snprintf(out + used, used < size ? size - used : 0, "%s%s", used ? "," : "", text);
        }
        freeifaddrs(all);
    }
    if (out[0] == '\0' || used >= size)
        snprintf(out, size, "none");
}

static void run_user_data(void)
{
    char head[2] = {0};
    int fd = open(RUN "/user_data", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, head, 2);
    close(fd);
    if (n != 2 || head[0] != '#' || head[1] != '!')
        return;
    chmod(RUN "/user_data", 0700);
    say("YUNSTACK-USERDATA-BEGIN\n");
    pid_t pid = fork();
    if (pid == 0) {
        as_own_process();
        if (chdir("/root") != 0)
            _exit(126);
        setenv("HOME", "/root", 1);
        char *argv[] = {RUN "/user_data", NULL};
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        dup2(STDOUT_FILENO, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    say("YUNSTACK-USERDATA-END rc=%d\n", pid > 0 ? wait_for(pid) : 127);
}

int take_identity(const char *incoming)
{
    char path[256], was[128];
    snprintf(path, sizeof path, "%s/resume", incoming);
    struct identity id;
    char *text = slurp(path, NULL);
    if (text == NULL || parse(text, &id) != 0) {
        free(text);
        return 1;
    }
    lock();
    /* Only a guest without an identity (a template, so a guest started from one) takes one; the
     * shell resume says what it does with the others. */
    if (strcmp(first_line(RUN "/instance-id", was, sizeof was), "none") != 0) {
        unlock();
        free(text);
        return 1;
    }
    setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    say("\nYUNSTACK-RESUME instance-id=%s was=%s\n", id.instance_id, was);
    for (size_t i = 0; i < sizeof KEPT / sizeof KEPT[0]; i++) {
        char from[256], to[256];
        snprintf(from, sizeof from, "%s/%s", incoming, KEPT[i]);
        snprintf(to, sizeof to, RUN "/%s", KEPT[i]);
        unlink(to);
        rename(from, to);
    }
    unlink(RUN "/meta_data.flat"); /* the template's; made anew after READY */
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    pid_t old_dhcp = stop_template_dhcp();
    take_macs(sock);
    char line[160];
    int n = snprintf(line, sizeof line, "%s\n", id.instance_id);
    spit(RUN "/instance-id", line, n < (int)sizeof line ? (size_t)n : sizeof line - 1, 0644);
    char hostname[256] = {0};
    if (id.hostname != NULL && id.hostname[0] != '\0')
        snprintf(hostname, sizeof hostname, "%s", id.hostname);
    else
        gethostname(hostname, sizeof hostname - 1);
    set_hostname(hostname);

    char ip[INET_ADDRSTRLEN] = "none";
    int eth0_set = 0;
    /* eth0 only: it is the NIC a boot leases an address on; the others stay down, as at boot. */
    for (int i = 0; i < id.n_addresses && !eth0_set; i++) {
        char name[IF_NAMESIZE];
        if (interface_with(id.addresses[i].mac, name) == 0 && strcmp(name, "eth0") == 0 &&
            set_address(sock, &id.addresses[i], name) == 0) {
            eth0_set = 1;
            ipv4_of(sock, "eth0", ip, sizeof ip);
            write_resolv_conf(&id.addresses[i]);
        }
    }
    int eth0 = access("/sys/class/net/eth0", F_OK) == 0;
    pid_t dhcp = 0;
    if (eth0 && !eth0_set) { /* no address from the host: the lease is waited for, as at boot */
        set_up(sock, "eth0", 1);
        dhcp = start_dhcp(hostname, old_dhcp);
    }
    set_clock(); /* after a lease was asked for above: it does not wait for the clock */
    seed_rng(incoming);
    pid_t old_dropbear = new_hostkey(incoming);
    say("YUNSTACK-METADATA instance-id=%s hostname=%s source=identity-port\n", id.instance_id, hostname);
    write_meta(&id);
    write_authorized_keys(incoming);

    if (dhcp > 0) { /* READY reports the lease's address */
        wait_for(dhcp);
        ipv4_of(sock, "eth0", ip, sizeof ip);
    }
    if (access("/usr/sbin/dropbear", X_OK) == 0) {
        /* The new one must bind port 22, which the old one holds until it is gone (2 s at most). */
        for (int i = 0; old_dropbear != 0 && alive(old_dropbear) && i < 40; i++)
            sleep_ms(50);
        snprintf(path, sizeof path, "%s/ssh_host_ed25519_key.pub", incoming);
        say("YUNSTACK-SSH-HOSTKEY %s\n", first_line(path, line, sizeof line));
        /* -F: not to the background, which would cost a fork; it is no child of a shell or a
         * terminal, and it outlives this run (its parent, the listener, lives as long). */
        char *argv[] = {"dropbear", "-F", "-s", "-r", HOSTKEY, "-p", "22", "-P", "/run/dropbear.pid", NULL};
        start(argv, NULL);
    }
    char ip6[256];
    ipv6_of("eth0", ip6, sizeof ip6);
    run_user_data();
    if (sock >= 0)
        close(sock);
    say("YUNSTACK-READY hostname=%s ip=%s instance-id=%s ip6=%s\n", hostname, ip, id.instance_id, ip6);
    /* After READY, off its path: the lease (its foreground process ends with it, reaped by the
     * listener), and meta_data.flat as the boot makes it, for the guest's own scripts. */
    if (eth0 && eth0_set)
        start_dhcp(hostname, old_dhcp);
    char *flatten[] = {"sh", "-c", "awk -f /usr/lib/yunstack/jsonflat.awk " RUN "/meta_data.json > " RUN
                       "/meta_data.flat.new && mv " RUN "/meta_data.flat.new " RUN "/meta_data.flat", NULL};
    if (access(RUN "/meta_data.json", R_OK) == 0)
        start(flatten, NULL);
    static const char *const USED[] = {"resume", "authorized_keys", "random_seed", "ssh_host_ed25519_key.pub"};
    for (size_t i = 0; i < sizeof USED / sizeof USED[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", incoming, USED[i]);
        unlink(path);
    }
    unlock();
    free(text);
    return 0;
}
