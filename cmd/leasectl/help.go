package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

const usageHeader = `leasectl is the command-line client of a leasemesh dispatcher.

Usage:
  leasectl <verb> [flags] [arguments]
  leasectl help [verb]

Flags and arguments may come in any order; "--" ends the flags.
`

const usageFooter = `
Environment:
  LEASECTL_URL           the RPC URL (default ` + defaultURL + `)
  LEASECTL_SERVICE       the service name sent as Rpc-Service (the demo's: resourcelease-mesh-demo)
  LEASECTL_NAMESPACE     the procedure namespace (default ` + defaultNamespace + `; the demo's: resourcelease.mesh)
  LEASECTL_CALLER        the Rpc-Caller (default ` + defaultCaller + `)
  LEASECTL_CONTROL_URL   the control plane's URL, for items, item, pause, resume, peers and tail (default ` + defaultControlURL + `)
  LEASECTL_BEARER_TOKEN  the bearer token of protected endpoints

Exit status: 0 on success; 1 when a call fails, with
"error: <status> <code>: <message>" on stderr; 2 for a usage error.

Run 'leasectl help <verb>' for a verb's flags and an example.
`

// printUsage prints the overview: the verbs, the environment and the exit
// statuses.
func (a *app) printUsage(w io.Writer) {
	fmt.Fprint(w, usageHeader)
	fmt.Fprintln(w, "\nVerbs:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, usageFooter)
}

// help is the help verb: the overview, or one verb's help.
func (a *app) help(args []string) int {
	switch len(args) {
	case 0:
		a.printUsage(a.stdout)
		return exitOK
	case 1:
		if c := lookup(args[0]); c != nil {
			a.printCommandHelp(a.stdout, c)
			return exitOK
		}
		fmt.Fprintf(a.stderr, "leasectl help: unknown verb %q\nRun 'leasectl help' for the list of verbs.\n", args[0])
	default:
		fmt.Fprintf(a.stderr, "leasectl help: too many arguments\nRun 'leasectl help' for the list of verbs.\n")
	}
	return exitUsage
}

// printCommandHelp prints a verb's synopsis, description, flags and example.
func (a *app) printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage:\n  %s\n\n%s\n", c.synopsis, strings.TrimSpace(c.details))
	fs := newFlagSet(c.name)
	c.setup(a, fs)
	fmt.Fprintln(w, "\nFlags:")
	printFlags(w, fs)
	fmt.Fprintf(w, "\nExample:\n%s\n", indent(strings.TrimSpace(c.example), "  "))
}

// aliasPrefix marks the usage of a flag that is another name of a flag.
const aliasPrefix = "alias of --"

// alias registers name as another name of the flag canonical.
func alias(fs *flag.FlagSet, canonical, name string) {
	fs.Var(fs.Lookup(canonical).Value, name, aliasPrefix+canonical)
}

// printFlags prints fs's flags as "--name value" with their usage and
// default, listing aliases with the flag they stand for.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	aliases := map[string][]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if canonical, ok := strings.CutPrefix(f.Usage, aliasPrefix); ok {
			aliases[canonical] = append(aliases[canonical], "--"+f.Name)
		}
	})
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, aliasPrefix) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		if al := aliases[f.Name]; len(al) > 0 {
			line += " (or " + strings.Join(al, ", ") + ")"
		}
		fmt.Fprintln(w, line)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "        %s\n", usage)
	})
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
