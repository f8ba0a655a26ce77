"""What a user asks netlang to do: the commands of `netlang` and the CNTK actions they run.

    table.py                    every command, declared once: name, aliases, help, options, runner,
                                and for train/eval/write the CNTK actions it runs and their printers
    train.py                    the train action; evaluate.py: test/eval and write; common.py: what
                                the actions share (backend, network or model, readers)
    check.py explain.py data.py the commands that run no action
    output.py                   consoles, progress and the lines the actions print
"""
